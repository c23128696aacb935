# Tiny assertion helpers for the module evaluation tests: each returns a
# list of failure messages (empty when the expectation holds).
{ lib }:
let
  show = v: builtins.toJSON v;
in
rec {
  # Evaluates `module` with its option stand-ins and the stub pkgs, the
  # helper package set to the stub, plus `modules`; returns the config.
  evalWith =
    {
      module,
      stubs,
      pkgs,
    }:
    modules:
    (evalFull { inherit module stubs pkgs; } modules).config;

  # Like evalWith, but the whole result (config and options).
  evalFull =
    {
      module,
      stubs,
      pkgs,
    }:
    modules:
    lib.evalModules {
      modules = [
        module
        stubs
        {
          _module.args.pkgs = pkgs;
          services.nixBinaryCache.package = pkgs.nix-binary-cache;
        }
      ]
      ++ modules;
    };

  # Every option of services.nixBinaryCache has a description (RFC 42: the
  # options are the documentation).
  undocumented =
    name: options:
    let
      docs = lib.optionAttrSetToDocList options.services.nixBinaryCache;
      bare = map (o: o.name) (lib.filter (o: o.visible && (o.description or null) == null) docs);
    in
    if lib.length docs > 20 && bare == [ ] then
      [ ]
    else
      [ "${name}: options without a description (of ${toString (lib.length docs)}): ${builtins.toJSON bare}" ];

  # The type of `nix.settings` in NixOS and home-manager: freeform, lists
  # concatenate, atoms must agree.
  nixSettingsType =
    let
      confAtom = lib.types.nullOr (
        lib.types.oneOf [
          lib.types.bool
          lib.types.int
          lib.types.float
          lib.types.str
          lib.types.path
          lib.types.package
        ]
      );
    in
    lib.types.submodule {
      freeformType = lib.types.attrsOf (lib.types.either confAtom (lib.types.listOf confAtom));
    };

  eq =
    name: actual: expected:
    if actual == expected then [ ] else [ "${name}: expected ${show expected}, got ${show actual}" ];

  that = name: cond: if cond then [ ] else [ name ];

  contains =
    name: haystack: needle:
    if lib.hasInfix needle haystack then
      [ ]
    else
      [ "${name}: expected to contain ${show needle}, got ${show haystack}" ];

  hasElem =
    name: list: x:
    if lib.elem x list then [ ] else [ "${name}: expected ${show list} to contain ${show x}" ];

  # Messages of the assertions that fail in `config`.
  failedAssertions = config: map (a: a.message) (lib.filter (a: !a.assertion) config.assertions);

  # Exactly one failing assertion, and it mentions `fragment`.
  firesOnly =
    name: config: fragment:
    let
      failed = failedAssertions config;
    in
    if lib.length failed == 1 && lib.hasInfix fragment (lib.head failed) then
      [ ]
    else
      [ "${name}: expected one failing assertion about ${show fragment}, got ${show failed}" ];

  noAssertionFails =
    name: config:
    let
      failed = failedAssertions config;
    in
    if failed == [ ] then [ ] else [ "${name}: unexpected failing assertions ${show failed}" ];

  # A manifest as the stub pkgs write it: JSON (see stub-pkgs.nix).
  jsonFile = path: builtins.fromJSON (builtins.readFile path);
}
