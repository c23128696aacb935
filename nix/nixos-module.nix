# NixOS module: services.nixBinaryCache.
#
# Three roles around one S3 bucket:
# - provision (one host with the store's admin credentials): a hardened
#   oneshot unit reconciles the store into a binary cache, again whenever the
#   manifest changes and (by default) daily to repair drift;
# - trust (every machine): substituter, public keys and timeouts in
#   nix.settings;
# - push (builders): a signing key generated once at activation, a
#   post-build-hook that only queues the built paths, and an uploader service
#   that drains the queue.
#
# Everything the helper needs goes through one manifest (./manifest.nix,
# mirrored by src/manifest.rs). The system manifest, with the real paths, is
# installed as /etc/nix-binary-cache/manifest.toml for the CLI (push, doctor).
# Units that receive secrets through LoadCredential= read a copy of it whose
# secret paths point into their credentials directory: see `credential`.
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
    literalExpression
    optional
    optionalString
    escapeShellArg
    ;

  cfg = config.services.nixBinaryCache;
  manifestLib = import ./manifest.nix { inherit lib; };
  inherit (manifestLib) secretPath;
  exe = lib.getExe cfg.package;

  provisionUnit = "nix-binary-cache-provision";
  uploadUnit = "nix-binary-cache-upload";

  # The manifest is built at evaluation time, when the credentials directory
  # of a unit does not exist yet, so a unit's copy names the literal path
  # systemd gives it: /run/credentials/UNIT.service/ID (systemd.exec(5),
  # $CREDENTIALS_DIRECTORY). A literal path keeps the manifest
  # self-describing: `nix-binary-cache check` and `doctor` see exactly the
  # file the service opens, and the helper needs no systemd-specific lookup.
  credential = unit: id: "/run/credentials/${unit}.service/${id}";

  stateDir = manifestLib.stateDir;
  stateWriterFile = "${stateDir}/writer.env";

  signingKeyDir = "/var/lib/nix-binary-cache-keys";
  defaultSigningKeyFile =
    if cfg.push.keyName == null then null else "${signingKeyDir}/${cfg.push.keyName}.sec";
  inherit (manifestLib) publicKeyFile;

  # The writer credentials file provision maintains on this host, if any.
  localWriterFile =
    if cfg.provision.writerCredentialsFile != null then
      cfg.provision.writerCredentialsFile
    else
      stateWriterFile;

  provisionSection =
    {
      adminCredentialsFile,
      writerCredentialsFile,
    }:
    {
      inherit (cfg.provision)
        backend
        iamEndpoint
        writerUser
        writerPolicy
        public
        abortIncompleteMultipartDays
        waitTimeoutSecs
        ;
      inherit adminCredentialsFile writerCredentialsFile stateDir;
    };

  manifestSettings =
    {
      provision ? {
        adminCredentialsFile = manifestLib.pathString cfg.provision.adminCredentialsFile;
        writerCredentialsFile = manifestLib.pathString cfg.provision.writerCredentialsFile;
      },
      push ? { },
    }:
    manifestLib.configSettings cfg {
      provision = if cfg.provision.enable then provisionSection provision else null;
      inherit push;
    };

  mkManifest =
    name: value:
    manifestLib.file {
      inherit pkgs name;
      inherit (cfg) package;
    } value;

  # What a human or `doctor` uses: the real paths.
  systemManifest = mkManifest "nix-binary-cache-manifest.toml" (manifestSettings { });

  provisionManifest = mkManifest "nix-binary-cache-provision.toml" (manifestSettings {
    provision = {
      adminCredentialsFile = credential provisionUnit "admin";
      writerCredentialsFile =
        if cfg.provision.writerCredentialsFile == null then null else credential provisionUnit "writer";
    };
  });

  uploadManifest = mkManifest "nix-binary-cache-upload.toml" (manifestSettings {
    push = {
      signingKeyFile = credential uploadUnit "signing-key";
      writerCredentialsFile = credential uploadUnit "writer";
    };
  });

  # post-build-hook: queue the outputs and return at once. The nix-daemon runs
  # the hook synchronously and stops building after a failing hook, so it
  # must neither wait for the network nor fail; `enqueue` always exits 0.
  postBuildHook = pkgs.writeShellScript "nix-binary-cache-post-build-hook" (
    ''
      ${exe} enqueue --spool ${escapeShellArg cfg.push.spoolDir} --max-entries ${toString cfg.push.spoolMaxEntries} || true
    ''
    + optionalString (cfg.push.extraPostBuildHook != null) ''
      exec ${cfg.push.extraPostBuildHook}
    ''
  );

  signingKeyFile = toString cfg.push.signingKeyFile;

  # Hardening shared by the units that run the helper. Each exception to a
  # locked-down default is commented where a unit sets it.
  hardening = {
    ProtectSystem = "strict";
    ProtectHome = true;
    PrivateTmp = true;
    PrivateDevices = true;
    NoNewPrivileges = true;
    ProtectKernelTunables = true;
    ProtectKernelModules = true;
    ProtectKernelLogs = true;
    ProtectControlGroups = true;
    ProtectClock = true;
    ProtectHostname = true;
    ProtectProc = "invisible";
    ProcSubset = "pid";
    RestrictNamespaces = true;
    RestrictRealtime = true;
    RestrictSUIDSGID = true;
    LockPersonality = true;
    MemoryDenyWriteExecute = true;
    SystemCallArchitectures = "native";
    SystemCallFilter = [
      "@system-service"
      "~@privileged"
    ];
    # Refuse a filtered call instead of killing the process, so that a
    # library probing an optional call degrades rather than dies.
    SystemCallErrorNumber = "EPERM";
    CapabilityBoundingSet = "";
    AmbientCapabilities = "";
    UMask = "0077";
    # AF_INET/AF_INET6: the helper talks to the store. AF_UNIX: name
    # resolution through nscd or systemd-resolved, and the journal.
    RestrictAddressFamilies = [
      "AF_UNIX"
      "AF_INET"
      "AF_INET6"
    ];
  };

  # A oneshot that restarts `unit`: a timer or a path unit that merely
  # *starts* an active unit does nothing, and the provision unit stays active
  # (RemainAfterExit) while the uploader runs continuously. `restart`, not
  # `try-restart`: a unit that failed (a store down at boot) runs again too.
  restarter = description: unit: {
    inherit description;
    serviceConfig = {
      Type = "oneshot";
      ExecStart = "${config.systemd.package}/bin/systemctl restart ${unit}.service";
      # It only asks systemd, over its private AF_UNIX socket, to restart a
      # unit; it needs root for that, and nothing else.
      ProtectSystem = "strict";
      ProtectHome = true;
      PrivateTmp = true;
      NoNewPrivileges = true;
      RestrictAddressFamilies = [ "AF_UNIX" ];
      CapabilityBoundingSet = "";
    };
  };

  secretAssertion = manifestLib.secretAssertion ''
    "/run/secrets/nix-cache" from sops-nix or agenix, or a root-only file
    under /var/lib'';
  insecureAssertion = manifestLib.insecureAssertion cfg;

  keyNames = map (k: builtins.head (lib.splitString ":" k)) (manifestLib.trustedKeys cfg.trust);
in
{
  options.services.nixBinaryCache = manifestLib.cacheOptions // {
    enable = mkEnableOption "a Nix binary cache on S3-compatible storage (nix-binary-cache)";

    package = manifestLib.packageOption pkgs;

    manifestFile = mkOption {
      type = types.package;
      readOnly = true;
      description = ''
        The checked manifest of this configuration, with the real file paths,
        also installed as {file}`/etc/nix-binary-cache/manifest.toml`. Use it
        with the CLI, e.g.
        `nix-binary-cache push --manifest /etc/nix-binary-cache/manifest.toml ./result`
        or `nix-binary-cache doctor --manifest /etc/nix-binary-cache/manifest.toml`.
      '';
    };

    provision = {
      enable = mkEnableOption ''
        provisioning: reconcile the store into a binary cache (bucket,
        `nix-cache-info`, anonymous-read policy, writer identity and policy).
        Enable it on the one host that holds the store's admin credentials'';

      backend = mkOption {
        type = types.enum [
          "iam"
          "minio"
          "s3"
        ];
        example = "minio";
        description = ''
          How identities are managed. `iam`: the AWS IAM API (SeaweedFS 4.x,
          AWS, Ceph RGW; the store issues the writer's key). `minio`: the
          MinIO admin API (the writer's secret is generated here or taken
          from {option}`provision.writerCredentialsFile`). `s3`: bucket only,
          for stores whose identities are managed elsewhere (R2); give the
          writer's key in {option}`provision.writerCredentialsFile`.
        '';
      };

      adminCredentialsFile = secretPath {
        example = "/run/secrets/minio-root.env";
        description = ''
          Env file with the store's admin key pair: `AWS_ACCESS_KEY_ID` and
          `AWS_SECRET_ACCESS_KEY`, or `MINIO_ROOT_USER` and
          `MINIO_ROOT_PASSWORD` (the file `services.minio.rootCredentialsFile`
          uses works as is). The unit receives it through `LoadCredential=`,
          so it may be readable by root only. Must not be in the Nix store.
        '';
      };

      iamEndpoint = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "https://iam.amazonaws.com";
        description = ''
          IAM endpoint for the `iam` backend. Default: the S3 endpoint
          (SeaweedFS and Ceph serve IAM there); AWS needs its global IAM
          endpoint.
        '';
      };

      writerUser = mkOption {
        type = types.str;
        default = "nix-cache-writer";
        description = "Name of the writer identity in the store.";
      };

      writerPolicy = mkOption {
        type = types.str;
        default = "nix-cache-write";
        description = ''
          Name of the writer's policy: get, put, list and abort multipart
          uploads on this bucket, and never delete.
        '';
      };

      writerCredentialsFile = secretPath {
        example = "/run/secrets/nix-cache-writer.env";
        description = ''
          A writer key pair you manage (`minio` and `s3` backends). Unset, the
          helper keeps the writer's credentials in
          {file}`${stateWriterFile}` (mode 0600), creating them where the
          backend allows; builders need a copy of that file. An `iam` store
          issues its own keys and cannot adopt a given one.
        '';
      };

      public = mkOption {
        type = types.bool;
        default = true;
        description = ''
          Allow anonymous `s3:GetObject` on the bucket, which is how Nix
          substitutes over http(s). On AWS this needs the bucket's Block Public
          Access settings to allow public bucket policies.
        '';
      };

      abortIncompleteMultipartDays = mkOption {
        type = types.ints.unsigned;
        default = 0;
        example = 7;
        description = ''
          Add a lifecycle rule that aborts multipart uploads left incomplete
          for this many days (interrupted pushes leave their parts behind
          otherwise). 0: no rule.
        '';
      };

      waitTimeoutSecs = mkOption {
        type = types.ints.positive;
        default = 120;
        description = ''
          How long provisioning waits, with logged retries, for a store that is
          not up yet (e.g. at boot), in seconds. Then it fails with a clear
          error and the timer tries again later.
        '';
      };

      after = mkOption {
        type = types.listOf types.str;
        default = [ ];
        example = [ "minio.service" ];
        description = ''
          Units to start provisioning after, typically the store's own unit
          when it runs on this host. Ordering only: provisioning still waits
          for the store to answer.
        '';
      };

      timer = {
        enable = mkOption {
          type = types.bool;
          default = true;
          description = ''
            Re-run provisioning periodically, so that drift (a deleted policy,
            a disabled writer) is repaired without a configuration change. A
            converged run only reads.
          '';
        };
        onCalendar = mkOption {
          type = types.str;
          default = "daily";
          example = "hourly";
          description = "When to re-run provisioning (systemd.time(7) calendar event).";
        };
      };
    };

    trust = manifestLib.trustOptions // {
      enable = mkOption {
        type = types.bool;
        default = true;
        description = ''
          Use the cache on this machine: add it to `nix.settings.substituters`
          and its keys to `nix.settings.trusted-public-keys` (both lists merge
          with other definitions), and set defaults for `connect-timeout`,
          `fallback` and `narinfo-cache-negative-ttl`.
        '';
      };
    };

    push =
      manifestLib.pushOptions {
        signingKeyFileDefault = defaultSigningKeyFile;
        signingKeyFileDefaultText = ''"${signingKeyDir}/''${keyName}.sec"'';
        spoolDirDefault = "/var/spool/nix-binary-cache";
        writerCredentialsFileDefault = if cfg.provision.enable then localWriterFile else null;
        writerCredentialsFileDefaultText = ''
          if provision.enable then (provision.writerCredentialsFile or "${stateWriterFile}") else null
        '';
        extraWriterDescription = ''
          On the host that also provisions, the default is the file
          provisioning maintains. The uploader receives it through
          `LoadCredential=` and restarts when it changes.
        '';
      }
      // {
        enable = mkEnableOption ''
          pushing: sign and upload what this machine builds. The nix-daemon's
          post-build-hook queues each build's outputs instantly (of every build
          the daemon runs, whichever user asked for it; substituted paths are
          not queued) and an uploader service drains the queue, retrying while
          the cache is down'';

        extraPostBuildHook = mkOption {
          type = types.nullOr types.path;
          default = null;
          example = literalExpression ''pkgs.writeShellScript "my-hook" "echo $OUT_PATHS >> /var/log/built"'';
          description = ''
            Your own post-build-hook, run after this module's, with the same
            environment (`OUT_PATHS`, `DRV_PATH`); its exit status is the
            hook's. Nix has a single `post-build-hook`, which this module sets:
            defining `nix.settings.post-build-hook` elsewhere as well gives a
            "conflicting definitions" error; move that value here instead.
          '';
        };
      };
  };

  config = mkIf cfg.enable (mkMerge [
    {
      services.nixBinaryCache.manifestFile = systemManifest;

      environment.systemPackages = [ cfg.package ];
      environment.etc."nix-binary-cache/manifest.toml".source = systemManifest;

      assertions = [
        (insecureAssertion "endpoint" cfg.endpoint)
      ]
      ++ optional (cfg.provision.iamEndpoint != null) (
        insecureAssertion "provision.iamEndpoint" cfg.provision.iamEndpoint
      );
    }

    (mkIf cfg.provision.enable {
      assertions = [
        {
          assertion = cfg.provision.adminCredentialsFile != null;
          message = ''
            services.nixBinaryCache.provision.enable needs the store's admin
            credentials: set services.nixBinaryCache.provision.adminCredentialsFile
            to an env file (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or
            MINIO_ROOT_USER/MINIO_ROOT_PASSWORD) outside the Nix store, e.g.
            "/run/secrets/minio-root.env".
          '';
        }
        (secretAssertion "provision.adminCredentialsFile" cfg.provision.adminCredentialsFile)
        (secretAssertion "provision.writerCredentialsFile" cfg.provision.writerCredentialsFile)
        {
          assertion = cfg.provision.backend != "iam" || cfg.provision.writerCredentialsFile == null;
          message = ''
            services.nixBinaryCache.provision.writerCredentialsFile is set, but the
            `iam` backend cannot adopt a given key: the store issues the writer's
            keys itself. Remove the option; provisioning keeps the issued key in
            ${stateWriterFile}.
          '';
        }
      ];

      systemd.services.${provisionUnit} = {
        description = "Reconcile the S3 store into a Nix binary cache";
        wantedBy = [ "multi-user.target" ];
        wants = [ "network-online.target" ];
        after = [ "network-online.target" ] ++ cfg.provision.after;
        # Re-run exactly when the configuration changed: switch-to-configuration
        # restarts an active unit whose unit file differs.
        restartTriggers = [ provisionManifest ];
        serviceConfig = hardening // {
          Type = "oneshot";
          RemainAfterExit = true;
          ExecStart = "${exe} provision --manifest ${provisionManifest}";
          # No fixed identity: a transient user owns the state directory.
          DynamicUser = true;
          # The one writable place: writer credentials (0600) and the lock
          # that serialises concurrent runs.
          StateDirectory = "nix-binary-cache";
          StateDirectoryMode = "0700";
          LoadCredential = [
            "admin:${toString cfg.provision.adminCredentialsFile}"
          ]
          ++ optional (cfg.provision.writerCredentialsFile != null) "writer:${toString cfg.provision.writerCredentialsFile}";
          # The helper bounds its own wait for the store; leave it room.
          TimeoutStartSec = "${toString (cfg.provision.waitTimeoutSecs + 300)}s";
        };
      };

      systemd.services."${provisionUnit}-repeat" = mkIf cfg.provision.timer.enable (
        restarter "Re-run nix-binary-cache provisioning to repair drift" provisionUnit
      );

      systemd.timers."${provisionUnit}-repeat" = mkIf cfg.provision.timer.enable {
        description = "Re-run nix-binary-cache provisioning periodically";
        wantedBy = [ "timers.target" ];
        timerConfig = {
          OnCalendar = cfg.provision.timer.onCalendar;
          Persistent = true;
          RandomizedDelaySec = "15min";
        };
      };
    })

    (mkIf cfg.trust.enable {
      warnings =
        optional (cfg.trust.publicKeys == [ ]) ''
          services.nixBinaryCache.trust.publicKeys is empty: Nix requires signatures,
          so this machine will substitute nothing from ${manifestLib.substituterUrl cfg}.
          Add the public key a builder printed when it generated its key.
        ''
        ++ optional (cfg.push.enable && cfg.push.keyName != null && !lib.elem cfg.push.keyName keyNames) ''
          services.nixBinaryCache.push.keyName = "${cfg.push.keyName}" has no public key in
          services.nixBinaryCache.trust.publicKeys, so clients will reject what this
          builder pushes. After this switch, add the key printed at activation (also in
          ${publicKeyFile signingKeyFile}) to trust.publicKeys on every machine.
        '';

      nix.settings = manifestLib.trustNixSettings cfg;
    })

    (mkIf cfg.push.enable {
      assertions = [
        (manifestLib.keyNameAssertion cfg)
        {
          assertion = cfg.push.writerCredentialsFile != null;
          message = ''
            services.nixBinaryCache.push.enable needs the writer's credentials: set
            services.nixBinaryCache.push.writerCredentialsFile to a copy of the
            env file the provisioning host keeps in ${stateWriterFile} (e.g.
            "/run/secrets/nix-cache-writer.env" from sops-nix or agenix), or enable
            provision on this host.
          '';
        }
        (secretAssertion "push.signingKeyFile" cfg.push.signingKeyFile)
        (secretAssertion "push.writerCredentialsFile" cfg.push.writerCredentialsFile)
      ];

      # Generate the signing key once: fast, local, no network, so it fits the
      # activation script, which runs at every boot and switch. An existing
      # file is never touched (sops-nix or agenix may provide it). The helper
      # creates the directory 0700 and the key 0600, and prints the public
      # key.
      system.activationScripts.nixBinaryCacheSigningKey = {
        deps = [ ];
        text = ''
          if [ ! -e ${escapeShellArg signingKeyFile} ]; then
            ${exe} keys generate --name ${escapeShellArg (toString cfg.push.keyName)} \
              --secret-key-file ${escapeShellArg signingKeyFile} \
              --public-key-file ${escapeShellArg (publicKeyFile signingKeyFile)}
            echo "nix-binary-cache: add the public key above to services.nixBinaryCache.trust.publicKeys on every machine that uses the cache" >&2
          fi
        '';
      };

      nix.settings.post-build-hook = postBuildHook;

      # root owns the queue: the nix-daemon runs the hook as root.
      systemd.tmpfiles.rules = [ "d ${cfg.push.spoolDir} 0700 root root - -" ];

      systemd.services.${uploadUnit} = {
        description = "Upload queued Nix store paths to the binary cache";
        wantedBy = [ "multi-user.target" ];
        wants = [ "network-online.target" ];
        after = [
          "network-online.target"
          "nix-daemon.socket"
        ]
        ++ optional cfg.provision.enable "${provisionUnit}.service";
        # `nix path-info` and `nix-store --dump` for path metadata and NARs.
        path = [ config.nix.package ];
        environment = {
          # Read the store through the daemon: the local store's database is
          # read-only under ProtectSystem=strict.
          NIX_REMOTE = "daemon";
          # root's home is hidden (ProtectHome): Nix's caches and state go
          # to the unit's cache directory instead.
          HOME = "/var/cache/${uploadUnit}";
        };
        # Keeps retrying while credentials are missing, e.g. before the first
        # provisioning run or before a secret manager delivered them.
        unitConfig.StartLimitIntervalSec = 0;
        serviceConfig = hardening // {
          ExecStart = "${exe} upload-queue --spool ${escapeShellArg cfg.push.spoolDir} --manifest ${uploadManifest}";
          Restart = "on-failure";
          RestartSec = "10s";
          # Runs as root, but without any capability (CapabilityBoundingSet is
          # empty), so it cannot bypass file permissions: the spool belongs to
          # root because the daemon's hook writes it as root.
          User = "root";
          ReadWritePaths = [ cfg.push.spoolDir ];
          CacheDirectory = uploadUnit;
          LoadCredential = [
            "signing-key:${signingKeyFile}"
            "writer:${toString cfg.push.writerCredentialsFile}"
          ];
        };
      };

      # LoadCredential= copies the file when the unit starts: restart the
      # uploader when the writer's credentials change (a rotated IAM key, a
      # new secret from sops-nix).
      systemd.services."${uploadUnit}-reload" =
        restarter "Restart the nix-binary-cache uploader for new credentials" uploadUnit;
      systemd.paths."${uploadUnit}-reload" = {
        description = "Watch the nix-binary-cache writer credentials";
        wantedBy = [ "multi-user.target" ];
        pathConfig.PathChanged = toString cfg.push.writerCredentialsFile;
      };
    })
  ]);
}
