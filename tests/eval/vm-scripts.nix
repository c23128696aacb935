# The test scripts of the VM tests in nix/tests, rendered with stand-ins for
# the few nixpkgs parts they name, so that their Python can be compiled
# without KVM or nixpkgs. Returns { NAME = SCRIPT; }.
{ nixpkgsLib }:
let
  lib = import "${nixpkgsLib}/lib";
  fake = name: {
    type = "derivation";
    inherit name;
    outPath = "/nix/store/00000000000000000000000000000000-${name}";
    meta.mainProgram = name;
  };
  pkgs = {
    inherit lib;
    writeText = name: _: "/nix/store/00000000000000000000000000000000-${name}";
    testers.runNixOSTest = test: test;
    seaweedfs = fake "seaweedfs";
    curl = fake "curl";
    minio = fake "minio" // {
      overrideAttrs = _: fake "minio";
    };
  };
  args = {
    inherit pkgs;
    nixosModule = { };
    homeModule = { };
    homeManager = "/nix/store/00000000000000000000000000000000-home-manager";
  };
  script = file: (import file (builtins.intersectAttrs (builtins.functionArgs (import file)) args)).testScript;
in
{
  seaweedfs = script ../../nix/tests/seaweedfs.nix;
  minio = script ../../nix/tests/minio-store.nix;
  home-manager = script ../../nix/tests/home-manager.nix;
}
