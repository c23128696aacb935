# The shell the modules generate (the NixOS key activation script and
# post-build-hook, the home-manager key and nix.conf activation entries), rendered with the real
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
  h = import ./harness.nix { inherit lib; };
  pkgs = import ./stub-pkgs.nix { inherit lib; } // {
    nix-binary-cache = {
      type = "derivation";
      name = "nix-binary-cache";
      outPath = helperPrefix;
      meta.mainProgram = "nix-binary-cache";
    };
  };
  cache = {
    enable = true;
    endpoint = "https://s3.example.org";
    bucket = "nix-cache";
    trust.publicKeys = [ "s3.example.org-1:4klLDuxBlmx29Bsq3oCYya5t/ZdyGfmglIVmIGVUqcY=" ];
  };
  nixos =
    h.evalWith
      {
        module = ../../nix/nixos-module.nix;
        stubs = ./nixos-stubs.nix;
        inherit pkgs;
      }
      [
        {
          services.nixBinaryCache = cache // {
            push = {
              enable = true;
              keyName = "builder-1";
              writerCredentialsFile = "/run/secrets/writer.env";
              signingKeyFile = "${root}/system/keys/builder-1.sec";
              spoolDir = "${root}/spool";
              extraPostBuildHook = "${root}/extra-hook";
            };
          };
        }
      ];
  hmLib = import "${homeManager}/modules/lib/stdlib-extended.nix" lib;
  hm =
    (import ./harness.nix { lib = hmLib; }).evalWith
      {
        module = ../../nix/hm-module.nix;
        stubs = ./hm-stubs.nix;
        inherit pkgs;
      }
      [
        {
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
in
{
  nixosSigningKey = nixos.system.activationScripts.nixBinaryCacheSigningKey.text;
  nixosHook = builtins.readFile nixos.nix.settings.post-build-hook;
}
// lib.optionalAttrs (homeManager != null) {
  hmSigningKey = hm.home.activation.nixBinaryCacheSigningKey.data;
  hmConfigure = hm.home.activation.nixBinaryCacheConfigure.data;
}
