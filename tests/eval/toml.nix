# Renders a manifest value as TOML, to regenerate the golden file. Enough for
# the manifest's shape: top-level scalars, then one table per section, with
# strings, booleans, integers and lists of strings. JSON string escapes are
# valid TOML basic-string escapes.
{ lib }:
let
  value =
    v:
    if builtins.isList v then
      "[" + lib.concatMapStringsSep ", " value v + "]"
    else if builtins.isBool v then
      lib.boolToString v
    else if builtins.isInt v then
      toString v
    else
      builtins.toJSON (toString v);
  pairs = attrs: lib.concatMapStrings (k: "${k} = ${value attrs.${k}}\n") (lib.attrNames attrs);
  scalars = lib.filterAttrs (_: v: !builtins.isAttrs v);
  tables = lib.filterAttrs (_: builtins.isAttrs);
in
header: manifest:
header
+ pairs (scalars manifest)
+ lib.concatStrings (
  lib.mapAttrsToList (name: t: "\n[${name}]\n" + pairs t) (tables manifest)
)
