# Declarations of the home-manager options the module sets, with the types
# that matter for merging; home.activation uses home-manager's own DAG type
# (lib.hm, from the HOME_MANAGER checkout). The module's own options are
# real.
{ lib, pkgs, ... }:
let
  inherit (lib) mkOption types;
in
{
  options = {
    assertions = mkOption {
      type = types.listOf types.unspecified;
      default = [ ];
    };
    warnings = mkOption {
      type = types.listOf types.str;
      default = [ ];
    };
    home.homeDirectory = mkOption {
      type = types.str;
      default = "/home/alice";
    };
    home.packages = mkOption {
      type = types.listOf types.package;
      default = [ ];
    };
    home.activation = mkOption {
      type = lib.hm.types.dagOf types.str;
      default = { };
    };
    nix.package = mkOption {
      type = types.nullOr types.package;
      default = null;
    };
    nix.settings = mkOption {
      type = (import ./harness.nix { inherit lib; }).nixSettingsType;
      default = { };
    };
    xdg.configHome = mkOption {
      type = types.str;
      default = "/home/alice/.config";
    };
    xdg.dataHome = mkOption {
      type = types.str;
      default = "/home/alice/.local/share";
    };
    xdg.stateHome = mkOption {
      type = types.str;
      default = "/home/alice/.local/state";
    };
    xdg.configFile = mkOption {
      type = types.attrsOf (types.submodule { options.source = mkOption { type = types.anything; }; });
      default = { };
    };
    systemd.user.services = mkOption {
      type = types.attrsOf (types.attrsOf types.anything);
      default = { };
    };
  };
}
