# The manifest: the one contract between the Nix modules and the helper.
#
# Keep this in sync with src/manifest.rs.
#
# Both modules declare the options below, render them into one attribute set
# whose keys are the option names (`settings`), write it as TOML with
# `pkgs.formats.toml` and check it at build time with
# `nix-binary-cache check` (`file`), so that a bad configuration fails
# `nixos-rebuild build` or `home-manager build`, not the boot. Every key is
# written out, defaults included: the helper never has to guess a default
# the module chose differently. Null means "unset" and is left out (TOML has
# no null).
{ lib }:
let
  inherit (lib)
    mkOption
    types
    literalExpression
    ;
in
rec {
  # An option that holds the path of a secret. A string, not a Nix path: a
  # path literal (`./admin.env`) would be copied into the world-readable
  # store. The modules assert on `inStore` with a message that says what to
  # do instead.
  secretPath =
    args:
    mkOption (
      {
        type = types.nullOr (types.either types.str types.path);
        default = null;
      }
      // args
    );

  # Manifest format version (src/manifest.rs: MANIFEST_VERSION).
  version = 1;

  # The services run with this state directory (provision: writer
  # credentials, lock). src/manifest.rs: default_state_dir.
  stateDir = "/var/lib/nix-binary-cache";

  # True when `p` is, or would be copied into, the Nix store.
  inStore =
    p: p != null && (builtins.isPath p || lib.hasPrefix "${builtins.storeDir}/" (toString p));

  # A secret path as the string the user wrote (a path literal is not
  # copied into the store by this).
  pathString = p: if p == null then null else toString p;

  # The public key file written beside a secret key file `NAME.sec`.
  publicKeyFile =
    sk: if lib.hasSuffix ".sec" sk then "${lib.removeSuffix ".sec" sk}.pub" else "${sk}.pub";

  # Assertion: a secret option must not name a file in the Nix store.
  # `example` is a good place for such a file on this kind of system.
  secretAssertion = example: option: value: {
    assertion = !inStore value;
    message = ''
      services.nixBinaryCache.${option} = "${toString value}" lies in the Nix
      store (or is a Nix path literal, which is copied there), and every user
      can read the store. Keep the secret outside it and give its location as
      a string, e.g. ${example}.
    '';
  };

  # Assertion: no plain http to a host other than loopback unless allowed.
  insecureAssertion = cfg: option: url: {
    assertion = cfg.allowInsecureHttp || !insecureHttp url;
    message = ''
      services.nixBinaryCache.${option} = "${url}" is plain http to a host that
      is not loopback: the writer's requests and the cache's contents would
      cross the network unencrypted. Use https (with
      services.nixBinaryCache.caFile for a private CA), or set
      services.nixBinaryCache.allowInsecureHttp = true if the network is
      trusted (a test VM, a WireGuard link).
    '';
  };

  # The host of a URL (`http://[::1]:9000/x` -> `::1`), or null.
  hostOf =
    url:
    let
      m = builtins.match "[A-Za-z][A-Za-z0-9+.-]*://([^/?#]*).*" url;
      authority = lib.last (lib.splitString "@" (builtins.head m));
      v6 = builtins.match "[[]([0-9A-Fa-f:.]*)[]](:[0-9]+)?" authority;
    in
    if m == null then
      null
    else if v6 != null then
      builtins.head v6
    else
      builtins.head (lib.splitString ":" authority);

  # Same rule as the helper (src/http.rs is_loopback): localhost and
  # *.localhost, 127/8, ::1.
  isLoopback =
    host:
    let
      h = lib.toLower host;
    in
    h == "localhost"
    || lib.hasSuffix ".localhost" h
    || h == "::1"
    || builtins.match "127[.][0-9]+[.][0-9]+[.][0-9]+" h != null;

  # Plain http to a host other than loopback: credentials and signatures
  # would cross the network unencrypted.
  insecureHttp =
    url:
    url != null && lib.hasPrefix "http://" (lib.toLower url) && !(isLoopback (toString (hostOf url)));

  # Options of the `cache` section, shared by every role.
  cacheOptions = {
    endpoint = mkOption {
      type = types.str;
      example = "https://s3.example.org";
      description = ''
        URL of the S3 endpoint of the store (scheme, host and port, no
        bucket). The helper talks to it with SigV4; clients read the cache
        through {option}`substituterUrl`.
      '';
    };
    bucket = mkOption {
      type = types.str;
      example = "nix-cache";
      description = "Name of the bucket that holds the cache (3 to 63 of `a-z 0-9 . -`).";
    };
    region = mkOption {
      type = types.str;
      default = "us-east-1";
      example = "eu-central-1";
      description = ''
        SigV4 region of the store. MinIO and SeaweedFS accept `us-east-1`
        unless configured otherwise; on AWS use the bucket's region.
      '';
    };
    pathStyle = mkOption {
      type = types.bool;
      default = true;
      description = ''
        Address the bucket as `endpoint/bucket` (path style, what MinIO,
        SeaweedFS and Ceph expect) instead of `bucket.endpoint`
        (virtual-host style, which AWS prefers and requires for new regions).
      '';
    };
    allowInsecureHttp = mkOption {
      type = types.bool;
      default = false;
      description = ''
        Allow a plain `http://` endpoint whose host is not loopback. Writer
        credentials are signed, not encrypted, and anything between this
        machine and the store can read the traffic: use it only on a network
        you trust, e.g. a test VM or a WireGuard link.
      '';
    };
    caFile = mkOption {
      type = types.nullOr types.path;
      default = null;
      example = "/etc/ssl/certs/my-store-ca.pem";
      description = ''
        PEM bundle of extra certificate authorities for a store whose
        certificate is not signed by a public CA. This is public data, so a
        Nix path (copied into the store) is fine here. The helper uses it;
        Nix itself reads the system trust store, so add the CA to
        {option}`security.pki.certificateFiles` as well for substitution.
      '';
    };
    substituterUrl = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "https://cache.example.org";
      description = ''
        URL clients substitute from. Default: `endpoint/bucket` with path
        style, `scheme://bucket.host` with virtual-host style. Set it when
        a CDN or reverse proxy serves the bucket under another name.
      '';
    };
    storeDir = mkOption {
      type = types.str;
      default = "/nix/store";
      description = "Store directory written to `nix-cache-info`; it must match the clients' store.";
    };
    priority = mkOption {
      type = types.ints.unsigned;
      default = 41;
      description = ''
        `Priority` in `nix-cache-info`: lower is tried first. cache.nixos.org
        is 40, so the default 41 asks it first and this cache for the rest.
      '';
    };
    wantMassQuery = mkOption {
      type = types.bool;
      default = true;
      description = "`WantMassQuery` in `nix-cache-info`: let Nix query many paths at once.";
    };
  };

  # Options of the `trust` role. `enable` is added by each module.
  trustOptions = {
    publicKeys = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [ "s3.example.org-1:m0J/oDlLtqbWWYwuLAdfKgHhEx7PsKYxUy0mKGyAYPE=" ];
      description = ''
        Public keys (`name:base64`) whose signatures are accepted for paths
        from this cache: every builder's own key, or the one key they share.
        A builder prints its key when it generates it (first activation) and
        writes it next to the secret key as `NAME.pub`.
      '';
    };
    retiredPublicKeys = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [ "s3.example.org-1:m0J/oDlLtqbWWYwuLAdfKgHhEx7PsKYxUy0mKGyAYPE=" ];
      description = ''
        Keys that no longer sign but whose signatures are still accepted, so
        that paths pushed before a key rotation keep substituting until they
        are re-signed. Remove a key from here to stop trusting it.
      '';
    };
    connectTimeout = mkOption {
      type = types.ints.unsigned;
      default = 5;
      description = ''
        Default for Nix's `connect-timeout` (seconds), so that an unreachable
        cache costs seconds, not minutes. Set with `lib.mkDefault`: a value in
        `nix.settings` wins.
      '';
    };
    fallback = mkOption {
      type = types.bool;
      default = true;
      description = ''
        Default for Nix's `fallback`: build locally when a substitution fails,
        so that an unreachable cache never breaks a rebuild. Set with
        `lib.mkDefault`.
      '';
    };
    narinfoCacheNegativeTtl = mkOption {
      type = types.ints.unsigned;
      default = 300;
      description = ''
        Default for Nix's `narinfo-cache-negative-ttl` (seconds). Nix
        remembers that a path was missing for this long; its own default,
        3600, means a path asked for a minute before a builder pushed it stays
        "not available" on that client for an hour. 300 keeps the extra
        lookups cheap while a fresh push shows up within five minutes. Set
        with `lib.mkDefault`.
      '';
    };
  };

  # Options of the `push` role. The defaults of the paths differ between a
  # system and a user, so the modules pass them in.
  pushOptions =
    {
      signingKeyFileDefault,
      signingKeyFileDefaultText,
      spoolDirDefault,
      writerCredentialsFileDefault ? null,
      writerCredentialsFileDefaultText ? null,
      extraWriterDescription ? "",
    }:
    {
      keyName = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "s3.example.org-1";
        description = ''
          Name of the signing key, ending in `-N` (the rotation counter:
          `-1`, then `-2`, ...). Clients look keys up by this name.
        '';
      };
      signingKeyFile = secretPath {
        default = signingKeyFileDefault;
        defaultText = literalExpression signingKeyFileDefaultText;
        example = "/run/secrets/nix-cache-signing-key";
        description = ''
          Secret signing key (`name:base64`). If the file is missing it is
          generated at activation (mode 0600 in a 0700 directory, with the
          public key in `NAME.pub` beside it) and never overwritten. Point
          it at a file from sops-nix or agenix to share one key between
          builders. Must not be in the Nix store.
        '';
      };
      writerCredentialsFile = secretPath (
        {
          example = "/run/secrets/nix-cache-writer.env";
          description = ''
            Env file with `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY` of
            the identity allowed to write to the bucket (mode 0600, not in the
            Nix store). The provisioning host creates it; other builders get a
            copy out of band (sops-nix, agenix, scp).${extraWriterDescription}
          '';
        }
        // lib.optionalAttrs (writerCredentialsFileDefaultText != null) {
          default = writerCredentialsFileDefault;
          defaultText = literalExpression writerCredentialsFileDefaultText;
        }
      );
      compression = mkOption {
        type = types.enum [
          "zstd"
          "xz"
          "none"
        ];
        default = "zstd";
        description = "Compression of uploaded NARs. zstd decompresses fastest; xz is smallest.";
      };
      compressionLevel = mkOption {
        type = types.nullOr types.int;
        default = null;
        example = 9;
        description = "Compression level (zstd 1-19, xz 0-9). Default: the codec's own.";
      };
      jobs = mkOption {
        type = types.ints.positive;
        default = 4;
        description = "Parallel uploads.";
      };
      skipIfSubstitutable = mkOption {
        type = types.listOf types.str;
        default = [ "https://cache.nixos.org" ];
        example = [ ];
        description = ''
          Caches whose paths are not uploaded again: a closure push then
          uploads only what you built, not the parts of nixpkgs that
          cache.nixos.org already serves. One HEAD request per path.
        '';
      };
      spoolDir = mkOption {
        type = types.str;
        default = spoolDirDefault;
        description = "Directory of the upload queue.";
      };
      spoolMaxEntries = mkOption {
        type = types.ints.positive;
        default = 10000;
        description = ''
          Size cap of the upload queue. Beyond it new entries are refused
          with a log line (never a failed build) and the oldest are kept.
        '';
      };
    };

  # The URL clients substitute from (see the `substituterUrl` option).
  substituterUrl =
    cfg:
    let
      m = builtins.match "([A-Za-z][A-Za-z0-9+.-]*)://([^/?#]*).*" cfg.endpoint;
    in
    if cfg.substituterUrl != null then
      cfg.substituterUrl
    else if cfg.pathStyle || m == null then
      "${lib.removeSuffix "/" cfg.endpoint}/${cfg.bucket}"
    else
      "${builtins.elemAt m 0}://${cfg.bucket}.${builtins.elemAt m 1}";

  cacheSection = cfg: {
    inherit (cfg)
      endpoint
      bucket
      region
      pathStyle
      allowInsecureHttp
      caFile
      storeDir
      priority
      wantMassQuery
      ;
    substituterUrl = substituterUrl cfg;
  };

  trustSection = trust: { inherit (trust) publicKeys retiredPublicKeys; };

  pushSection = push: {
    inherit (push)
      keyName
      compression
      compressionLevel
      jobs
      skipIfSubstitutable
      spoolDir
      spoolMaxEntries
      ;
    signingKeyFile = pathString push.signingKeyFile;
    writerCredentialsFile = pathString push.writerCredentialsFile;
  };

  # The keys a client accepts signatures of: current and retired.
  trustedKeys = trust: trust.publicKeys ++ trust.retiredPublicKeys;

  # The trust role as `nix.settings` (NixOS, and home-manager when it owns
  # nix.conf): the lists merge with other definitions, the rest are
  # defaults that a value set elsewhere wins over.
  trustNixSettings = cfg: {
    substituters = [ (substituterUrl cfg) ];
    trusted-public-keys = trustedKeys cfg.trust;
    connect-timeout = lib.mkDefault cfg.trust.connectTimeout;
    fallback = lib.mkDefault cfg.trust.fallback;
    narinfo-cache-negative-ttl = lib.mkDefault cfg.trust.narinfoCacheNegativeTtl;
  };

  # The `package` option of both modules.
  packageOption =
    pkgs:
    lib.mkPackageOption (
      pkgs
      // {
        # From this flake's overlay if applied, otherwise built from this
        # flake's nix/package.nix with the configuration's own nixpkgs.
        nix-binary-cache = pkgs.nix-binary-cache or (pkgs.callPackage ./package.nix { });
      }
    ) "nix-binary-cache" {
      extraDescription = ''
        Without this flake's overlay it is built from this flake's
        {file}`nix/package.nix` with the configuration's nixpkgs, which needs
        the Rust version named in {file}`Cargo.toml` (nixpkgs 26.05 has it).
      '';
    };

  # Assertion: the push role needs a key name.
  keyNameAssertion = cfg: {
    assertion = cfg.push.keyName != null;
    message = ''
      services.nixBinaryCache.push.enable needs a signing key name: set
      services.nixBinaryCache.push.keyName, e.g. "s3.example.org-1" (the
      trailing number counts rotations). The key is generated at the next
      activation and its public key printed.
    '';
  };

  # The manifest of a module's configuration `cfg`, with the roles it
  # enables. `provision` is the provision section (NixOS only: a user holds
  # no such role); `push` replaces fields of the push section (the paths a
  # unit reads its credentials from).
  configSettings =
    cfg:
    {
      provision ? null,
      push ? { },
    }:
    settings {
      cache = cacheSection cfg;
      inherit provision;
      trust = if cfg.trust.enable then trustSection cfg.trust else null;
      push = if cfg.push.enable then pushSection cfg.push // push else null;
    };

  # The manifest as an attribute set: null values and absent roles dropped.
  settings =
    {
      cache,
      provision ? null,
      trust ? null,
      push ? null,
    }:
    lib.filterAttrsRecursive (_: v: v != null) {
      inherit
        version
        cache
        provision
        trust
        push
        ;
    };

  # The manifest file: TOML from `pkgs.formats.toml`, then a derivation whose
  # checkPhase runs the helper's own validation on it.
  file =
    {
      pkgs,
      package,
      name ? "nix-binary-cache-manifest.toml",
    }:
    value:
    pkgs.stdenvNoCC.mkDerivation {
      inherit name;
      src = (pkgs.formats.toml { }).generate name value;
      nativeBuildInputs = [ package ];
      dontUnpack = true;
      dontConfigure = true;
      buildPhase = ''
        runHook preBuild
        install -m 0644 "$src" "$out"
        runHook postBuild
      '';
      doCheck = true;
      checkPhase = ''
        runHook preCheck
        nix-binary-cache check "$out"
        runHook postCheck
      '';
      dontInstall = true;
      dontFixup = true;
      preferLocalBuild = true;
      allowSubstitutes = false;
      passthru = { inherit value; };
    };
}
