# The shell the modules generate (the NixOS key activation script, the
# home-manager key and nix.conf activation entries), rendered with the real
# helper as the package and paths under `root`, for tests/eval-modules.sh to
# run: the snippets and the helper's command line must agree.
{
  nixpkgsLib,
  homeManager ? null,
  helperPrefix,
  root,
}:
let
  lib = import "${nixpkgsLib}/lib";
  pkgs = import ./stub-pkgs.nix { inherit lib; };
  helper = {
    type = "derivation";
    name = "nix-binary-cache";
    outPath = helperPrefix;
    meta.mainProgram = "nix-binary-cache";
  };
  cache = {
    package = helper;
    enable = true;
    endpoint = "https://s3.example.org";
    bucket = "nix-cache";
    trust.publicKeys = [ "s3.example.org-1:4klLDuxBlmx29Bsq3oCYya5t/ZdyGfmglIVmIGVUqcY=" ];
  };
  nixos =
    (lib.evalModules {
      modules = [
        ../../nix/nixos-module.nix
        ./nixos-stubs.nix
        {
          _module.args.pkgs = pkgs;
          services.nixBinaryCache = cache // {
            push = {
              enable = true;
              keyName = "builder-1";
              writerCredentialsFile = "/run/secrets/writer.env";
              signingKeyFile = "${root}/system/keys/builder-1.sec";
            };
          };
        }
      ];
    }).config;
  hmLib = import "${homeManager}/modules/lib/stdlib-extended.nix" lib;
  hm =
    (hmLib.evalModules {
      modules = [
        ../../nix/hm-module.nix
        ./hm-stubs.nix
        {
          _module.args.pkgs = pkgs;
          xdg.configHome = "${root}/home/.config";
          xdg.dataHome = "${root}/home/.local/share";
          services.nixBinaryCache = cache // {
            push = {
              enable = true;
              keyName = "alice-1";
              writerCredentialsFile = "${root}/home/writer.env";
            };
          };
        }
      ];
    }).config;
in
{
  nixosSigningKey = nixos.system.activationScripts.nixBinaryCacheSigningKey.text;
}
// lib.optionalAttrs (homeManager != null) {
  hmSigningKey = hm.home.activation.nixBinaryCacheSigningKey.data;
  hmConfigure = hm.home.activation.nixBinaryCacheConfigure.data;
}
