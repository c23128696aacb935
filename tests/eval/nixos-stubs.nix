# Declarations of the NixOS options the module sets, with the types that
# matter for merging (lists concatenate, nix.settings is freeform like
# nixos/modules/config/nix.nix), and nothing else. The module's own options
# are real.
{ lib, pkgs, ... }:
let
  inherit (lib) mkOption types;
  list = mkOption {
    type = types.listOf types.anything;
    default = [ ];
  };
  attrs = mkOption {
    type = types.attrsOf types.anything;
    default = { };
  };
  unit = types.submodule {
    freeformType = types.attrsOf types.anything;
    options = {
      wantedBy = list;
      wants = list;
      after = list;
      before = list;
      requires = list;
      path = list;
      restartTriggers = list;
      environment = attrs;
      serviceConfig = attrs;
      unitConfig = attrs;
      timerConfig = attrs;
      pathConfig = attrs;
    };
  };
in
{
  options = {
    assertions = list;
    warnings = mkOption {
      type = types.listOf types.str;
      default = [ ];
    };
    nix.package = mkOption {
      type = types.package;
      default = pkgs.nix;
    };
    nix.settings = mkOption {
      type = (import ./harness.nix { inherit lib; }).nixSettingsType;
      default = { };
    };
    environment.systemPackages = mkOption {
      type = types.listOf types.package;
      default = [ ];
    };
    environment.etc = mkOption {
      type = types.attrsOf (types.submodule { options.source = mkOption { type = types.anything; }; });
      default = { };
    };
    systemd.package = mkOption {
      type = types.package;
      default = pkgs.systemd;
    };
    systemd.services = mkOption {
      type = types.attrsOf unit;
      default = { };
    };
    systemd.timers = mkOption {
      type = types.attrsOf unit;
      default = { };
    };
    systemd.paths = mkOption {
      type = types.attrsOf unit;
      default = { };
    };
    systemd.tmpfiles.rules = mkOption {
      type = types.listOf types.str;
      default = [ ];
    };
    system.activationScripts = mkOption {
      type = types.attrsOf (
        types.either types.str (
          types.submodule {
            options = {
              deps = mkOption {
                type = types.listOf types.str;
                default = [ ];
              };
              text = mkOption { type = types.lines; };
              supportsDryActivation = mkOption {
                type = types.bool;
                default = false;
              };
            };
          }
        )
      );
      default = { };
    };
  };
}
