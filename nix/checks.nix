# `nix flake check`: the package (with its unit tests), the README example's
# manifest (checked by the helper at build time, equal to the golden file),
# the module evaluation tests against this nixpkgs' lib, and the VM tests
# (which need KVM).
{
  pkgs,
  package,
  nixosModule,
  homeModule,
  homeManager,
}:
let
  inherit (pkgs) lib;

  readme =
    (import "${pkgs.path}/nixos/lib/eval-config.nix" {
      system = null;
      modules = [
        nixosModule
        ../tests/golden/readme-example.nix
        {
          nixpkgs.pkgs = pkgs;
          services.nixBinaryCache.package = package;
        }
      ];
    }).config;
  readmeManifest = readme.services.nixBinaryCache.manifestFile;
  golden = builtins.fromTOML (builtins.readFile ../tests/golden/readme-manifest.toml);
  # This module's assertions only: the example is not a whole machine (no
  # file systems, no boot loader), which other modules' assertions reject.
  failedAssertions = lib.filter (lib.hasInfix "services.nixBinaryCache") (
    map (a: a.message) (lib.filter (a: !a.assertion) readme.assertions)
  );

  evalResults = {
    nixos = (import ../tests/eval/nixos.nix { nixpkgsLib = pkgs.path; }).result;
    home-manager =
      (import ../tests/eval/home-manager.nix {
        nixpkgsLib = pkgs.path;
        inherit homeManager;
      }).result;
  };
  evalFailures = lib.concatLists (lib.mapAttrsToList (_: r: r.failures) evalResults);

  vmArgs = {
    inherit
      pkgs
      nixosModule
      homeModule
      homeManager
      ;
  };
  vmTest = file: import file (builtins.intersectAttrs (builtins.functionArgs (import file)) vmArgs);
in
{
  inherit package;

  manifest-readme =
    if failedAssertions != [ ] then
      throw "the README example fails its assertions:\n${lib.concatStringsSep "\n" failedAssertions}"
    else if readmeManifest.value != golden then
      throw "the README example no longer produces tests/golden/readme-manifest.toml: run UPDATE_GOLDEN=1 bash tests/eval-modules.sh"
    else
      readmeManifest;

  module-eval =
    if evalFailures != [ ] then
      throw "module evaluation tests failed:\n${lib.concatStringsSep "\n" evalFailures}"
    else
      pkgs.writeText "module-eval" (
        lib.concatStrings (lib.mapAttrsToList (n: r: "${n}: ${toString r.checks} checks passed\n") evalResults)
      );

  vm-seaweedfs = vmTest ./tests/seaweedfs.nix;
  vm-minio = vmTest ./tests/minio-store.nix;
  vm-home-manager = vmTest ./tests/home-manager.nix;
}
