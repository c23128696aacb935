# home-manager module: services.nixBinaryCache for one user.
#
# The same option names as the NixOS module (one set of docs, one manifest
# schema; a configuration moves between the two unchanged), minus the roles a
# user cannot hold: provisioning needs the store's admin credentials and a
# system unit, and the post-build-hook is a root-only Nix setting. What a user
# gets:
# - trust: the cache in the user's nix.conf, through home-manager's
#   `nix.settings` when `nix.package` is set, otherwise through the helper's
#   managed block (`nix-binary-cache configure`), which keeps every other line
#   of an existing, hand-written nix.conf;
# - push: a signing key generated once, the helper on PATH with a manifest
#   for explicit `nix-binary-cache push`, and optionally a systemd user
#   service that drains a queue filled with `nix-binary-cache enqueue`.
#
# It is a `services.*` module, not `programs.*`, because it mirrors the NixOS
# service of the same name and may run a user service; the option paths are
# then identical in both.
{
  config,
  lib,
  pkgs,
  ...
}:
let
  inherit (lib)
    mkIf
    mkMerge
    mkOption
    mkEnableOption
    types
    optional
    escapeShellArg
    escapeShellArgs
    ;

  cfg = config.services.nixBinaryCache;
  manifestLib = import ./manifest.nix { inherit lib; };
  exe = lib.getExe cfg.package;

  keyDir = "${config.xdg.dataHome}/nix-binary-cache/keys";
  signingKeyFile = toString cfg.push.signingKeyFile;
  publicKeyFile = manifestLib.publicKeyFile signingKeyFile;
  nixConf = "${config.xdg.configHome}/nix/nix.conf";

  manifest = manifestLib.file {
    inherit pkgs;
    inherit (cfg) package;
  } (manifestLib.configSettings cfg { });

  trustedKeys = manifestLib.trustedKeys cfg.trust;
  useNixSettings = config.nix.package != null;

  untrustedNote = ''
    The nix-daemon ignores `substituters` and `trusted-public-keys` from the
    nix.conf of a user who is not in its `trusted-users`: for such a user this
    setting changes nothing. Configure the cache system-wide instead (the
    NixOS module's trust role, or the system nix.conf), or have the
    administrator list it in `trusted-substituters` and its keys in
    `trusted-public-keys`, after which any user may enable it.
  '';

  secretAssertion = manifestLib.secretAssertion ''
    "${config.xdg.configHome}/nix-binary-cache/writer.env" (mode 0600) or a
    file from sops-nix or agenix'';
in
{
  options.services.nixBinaryCache = manifestLib.cacheOptions // {
    enable = mkEnableOption "a Nix binary cache on S3-compatible storage for this user (nix-binary-cache)";

    package = manifestLib.packageOption pkgs;

    manifestFile = mkOption {
      type = types.package;
      readOnly = true;
      description = ''
        The checked manifest of this configuration, also linked as
        {file}`$XDG_CONFIG_HOME/nix-binary-cache/manifest.toml`, e.g. for
        `nix-binary-cache push --manifest ~/.config/nix-binary-cache/manifest.toml ./result`.
      '';
    };

    trust = manifestLib.trustOptions // {
      enable = mkOption {
        type = types.bool;
        default = true;
        description = ''
          Add the cache and its keys to this user's nix.conf: through
          `nix.settings` when `nix.package` is set (with defaults for
          `connect-timeout`, `fallback` and `narinfo-cache-negative-ttl`),
          otherwise through the helper's managed block in
          {file}`$XDG_CONFIG_HOME/nix/nix.conf`, which keeps every other line
          (that block carries `connect-timeout` and
          `narinfo-cache-negative-ttl` from the options below, and
          `fallback = true`).

          ${untrustedNote}
        '';
      };
    };

    push =
      manifestLib.pushOptions {
        signingKeyFileDefault =
          if cfg.push.keyName == null then null else "${keyDir}/${cfg.push.keyName}.sec";
        signingKeyFileDefaultText = ''"''${config.xdg.dataHome}/nix-binary-cache/keys/''${keyName}.sec"'';
        spoolDirDefault = "${config.xdg.stateHome}/nix-binary-cache/spool";
        extraWriterDescription = " Required.";
      }
      // {
        enable = mkEnableOption ''
          pushing for this user: a signing key generated at activation (never
          overwritten) and the helper on PATH, with a manifest, for
          `nix-binary-cache push --manifest ~/.config/nix-binary-cache/manifest.toml PATH...`.
          There is no automatic push: `post-build-hook` is a root-only setting;
          use the NixOS module's push role for that'';

        uploader.enable = mkEnableOption ''
          a systemd user service that drains this user's upload queue,
          retrying while the cache is down. Queue paths with
          `OUT_PATHS="$(nix build --print-out-paths)" nix-binary-cache enqueue --spool ''${push.spoolDir}`'';
      };
  };

  config = mkIf cfg.enable (mkMerge [
    {
      services.nixBinaryCache.manifestFile = manifest;
      home.packages = [ cfg.package ];
      xdg.configFile."nix-binary-cache/manifest.toml".source = manifest;

      assertions = [
        (manifestLib.insecureAssertion cfg "endpoint" cfg.endpoint)
      ];
    }

    (mkIf cfg.trust.enable (mkMerge [
      {
        warnings = optional (trustedKeys == [ ]) ''
          services.nixBinaryCache.trust.publicKeys is empty: Nix requires signatures,
          so nothing will be substituted from ${manifestLib.substituterUrl cfg}.
        '';
      }

      (mkIf useNixSettings { nix.settings = manifestLib.trustNixSettings cfg; })

      # Without nix.package home-manager does not own nix.conf: edit the
      # managed block in place. `run` prints instead of running under
      # --dry-run; after writeBoundary, as every activation side effect.
      (mkIf (!useNixSettings && trustedKeys != [ ]) {
        home.activation.nixBinaryCacheConfigure = lib.hm.dag.entryAfter [ "writeBoundary" ] ''
          run ${exe} configure --nix-conf ${escapeShellArg nixConf} \
            --substituter ${escapeShellArg (manifestLib.substituterUrl cfg)} \
            ${escapeShellArgs (lib.concatMap (k: [ "--trusted-public-key" k ]) trustedKeys)} \
            --connect-timeout ${toString cfg.trust.connectTimeout} \
            --narinfo-cache-negative-ttl ${toString cfg.trust.narinfoCacheNegativeTtl}
        '';
      })
    ]))

    (mkIf cfg.push.enable {
      assertions = [
        (manifestLib.keyNameAssertion cfg)
        {
          assertion = cfg.push.writerCredentialsFile != null;
          message = ''
            services.nixBinaryCache.push.enable needs the writer's credentials: set
            services.nixBinaryCache.push.writerCredentialsFile to a copy (mode 0600)
            of the env file the provisioning host keeps in
            /var/lib/nix-binary-cache/writer.env.
          '';
        }
        (secretAssertion "push.signingKeyFile" cfg.push.signingKeyFile)
        (secretAssertion "push.writerCredentialsFile" cfg.push.writerCredentialsFile)
      ];

      # Generate the signing key once; an existing file is never touched. The
      # helper creates the directory 0700 and the key 0600, and prints the
      # public key.
      home.activation.nixBinaryCacheSigningKey = lib.hm.dag.entryAfter [ "writeBoundary" ] ''
        if [[ ! -e ${escapeShellArg signingKeyFile} ]]; then
          run ${exe} keys generate --name ${escapeShellArg (toString cfg.push.keyName)} \
            --secret-key-file ${escapeShellArg signingKeyFile} \
            --public-key-file ${escapeShellArg publicKeyFile}
          if [[ ! -v DRY_RUN ]]; then
            echo "nix-binary-cache: generated ${signingKeyFile}; add the public key above to services.nixBinaryCache.trust.publicKeys of every machine that uses the cache"
          fi
        fi
      '';

      systemd.user.services.nix-binary-cache-upload = mkIf cfg.push.uploader.enable {
        Unit = {
          Description = "Upload queued Nix store paths to the binary cache";
          # Nothing to upload with until the activation above made the key.
          ConditionPathExists = signingKeyFile;
        };
        Service = {
          # `nix path-info` supplies path metadata; a user manager's PATH is
          # minimal, so name where Nix lives on NixOS and other systems.
          Environment = [
            "PATH=${
              lib.optionalString (config.nix.package != null) "${config.nix.package}/bin:"
            }%h/.nix-profile/bin:/etc/profiles/per-user/%u/bin:/nix/var/nix/profiles/default/bin:/run/current-system/sw/bin:/usr/bin:/bin"
          ];
          ExecStart = "${exe} upload-queue --spool ${escapeShellArg cfg.push.spoolDir} --manifest ${manifest}";
          Restart = "on-failure";
          RestartSec = 10;
        };
        Install.WantedBy = [ "default.target" ];
      };
    })
  ]);
}
