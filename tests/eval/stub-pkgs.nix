# Stand-ins for the few nixpkgs functions the modules call, so that the
# modules evaluate with nothing but a nixpkgs.lib checkout. They are not
# nixpkgs: files are written with builtins.toFile, so a test can read what a
# unit would read.
# - formats.toml: writes the value as JSON (the module's TOML rendering is
#   remarshal's job in nixpkgs; the test compares values, not bytes);
# - stdenvNoCC.mkDerivation: the checked manifest; its path is its source
#   file, and the derivation's arguments stay inspectable;
# - writeShellScript: the script text in a file.
{ lib }:
let
  fakePackage = name: {
    type = "derivation";
    inherit name;
    pname = name;
    outPath = "/nix/store/00000000000000000000000000000000-${name}-stub";
    meta.mainProgram = name;
  };
in
{
  formats.toml =
    { }:
    {
      type = lib.types.attrsOf lib.types.anything;
      generate = name: value: builtins.toFile name (builtins.toJSON value);
    };

  stdenvNoCC.mkDerivation = args: {
    type = "derivation";
    inherit (args) name;
    outPath = args.src;
    drvArgs = args;
  };

  writeShellScript = name: text: builtins.toFile name text;

  nix-binary-cache = fakePackage "nix-binary-cache";
  nix = fakePackage "nix";
  systemd = fakePackage "systemd";

  callPackage = _: _: throw "stub-pkgs: callPackage is not available; set services.nixBinaryCache.package";
}
