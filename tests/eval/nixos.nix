# Evaluates nix/nixos-module.nix with lib.evalModules and checks what it
# produces: nix.settings, units, the post-build-hook, the activation script,
# the manifests, and that every assertion fires on its bad configuration.
# Returns { result = { failures = [ ... ]; checks = N; }; golden = { ... }; }.
{ nixpkgsLib }:
let
  lib = import "${nixpkgsLib}/lib";
  pkgs = import ./stub-pkgs.nix { inherit lib; };
  h = import ./harness.nix { inherit lib; };
  # Quoted as the module quotes (whether it quotes depends on the lib version).
  q = lib.escapeShellArg;

  evalArgs = {
    module = ../../nix/nixos-module.nix;
    stubs = ./nixos-stubs.nix;
    inherit pkgs;
  };
  eval = h.evalWith evalArgs;

  readme = eval [ ../golden/readme-example.nix ];
  golden = builtins.fromTOML (builtins.readFile ../golden/readme-manifest.toml);

  svc = config: config.systemd.services;
  cfgOf = config: config.services.nixBinaryCache;
  manifestOf = config: (cfgOf config).manifestFile.drvArgs.src;
  execManifest = unit: h.jsonFile (lib.last (lib.splitString " " unit.serviceConfig.ExecStart));

  base = {
    services.nixBinaryCache = {
      enable = true;
      endpoint = lib.mkDefault "https://s3.example.org";
      bucket = "nix-cache";
      trust.publicKeys = [ "s3.example.org-1:4klLDuxBlmx29Bsq3oCYya5t/ZdyGfmglIVmIGVUqcY=" ];
    };
  };
  with_ = cfg: eval [
    base
    { services.nixBinaryCache = cfg; }
  ];

  # --- the README example: everything on one host -------------------------
  readmeManifest = h.jsonFile (manifestOf readme);
  provisionUnit = (svc readme).nix-binary-cache-provision;
  uploadUnit = (svc readme).nix-binary-cache-upload;
  provisionView = execManifest provisionUnit;
  uploadView = execManifest uploadUnit;
  hook = builtins.readFile readme.nix.settings.post-build-hook;
  activation = readme.system.activationScripts.nixBinaryCacheSigningKey;

  readmeChecks = [
    (h.undocumented "options" (h.evalFull evalArgs [ ../golden/readme-example.nix ]).options)
    (h.noAssertionFails "readme: assertions" readme)
    (h.eq "readme: warnings" readme.warnings [ ])
    (h.eq "readme: manifest equals tests/golden/readme-manifest.toml" readmeManifest golden)
    (h.eq "readme: /etc manifest is the checked manifest" readme.environment.etc."nix-binary-cache/manifest.toml".source (cfgOf readme).manifestFile)
    (h.contains "readme: manifest derivation checks itself" (cfgOf readme).manifestFile.drvArgs.checkPhase ''nix-binary-cache check "$out"'')
    (h.that "readme: manifest check is enabled" (cfgOf readme).manifestFile.drvArgs.doCheck)
    (h.hasElem "readme: helper on PATH" readme.environment.systemPackages pkgs.nix-binary-cache)

    # trust
    (h.eq "readme: substituters" readme.nix.settings.substituters [ "https://s3.example.org/nix-cache" ])
    (h.eq "readme: trusted-public-keys" readme.nix.settings.trusted-public-keys [
      "s3.example.org-1:4klLDuxBlmx29Bsq3oCYya5t/ZdyGfmglIVmIGVUqcY="
    ])
    (h.eq "readme: connect-timeout" readme.nix.settings.connect-timeout 5)
    (h.eq "readme: fallback" readme.nix.settings.fallback true)
    (h.eq "readme: narinfo-cache-negative-ttl" readme.nix.settings.narinfo-cache-negative-ttl 300)

    # provision unit
    (h.eq "provision: Type" provisionUnit.serviceConfig.Type "oneshot")
    (h.eq "provision: RemainAfterExit" provisionUnit.serviceConfig.RemainAfterExit true)
    (h.eq "provision: DynamicUser" provisionUnit.serviceConfig.DynamicUser true)
    (h.eq "provision: StateDirectory" provisionUnit.serviceConfig.StateDirectory "nix-binary-cache")
    (h.eq "provision: ProtectSystem" provisionUnit.serviceConfig.ProtectSystem "strict")
    (h.eq "provision: no capabilities" provisionUnit.serviceConfig.CapabilityBoundingSet "")
    (h.eq "provision: LoadCredential" provisionUnit.serviceConfig.LoadCredential [
      "admin:/run/secrets/nix-cache-admin.env"
    ])
    (h.hasElem "provision: wantedBy" provisionUnit.wantedBy "multi-user.target")
    (h.hasElem "provision: after network-online" provisionUnit.after "network-online.target")
    (h.hasElem "provision: wants network-online" provisionUnit.wants "network-online.target")
    (h.eq "provision: restartTriggers is its manifest" (map toString provisionUnit.restartTriggers) [
      (lib.last (lib.splitString " " provisionUnit.serviceConfig.ExecStart))
    ])
    (h.contains "provision: ExecStart" provisionUnit.serviceConfig.ExecStart "/bin/nix-binary-cache provision --manifest /nix/store/")
    (h.eq "provision: its manifest reads the admin credential from the unit's credentials directory"
      provisionView.provision.adminCredentialsFile
      "/run/credentials/nix-binary-cache-provision.service/admin"
    )
    (h.eq "provision: its manifest differs from the system one only there"
      (lib.recursiveUpdate provisionView { provision.adminCredentialsFile = "/run/secrets/nix-cache-admin.env"; })
      readmeManifest
    )
    (h.eq "provision: timer" (readme.systemd.timers.nix-binary-cache-provision-repeat.timerConfig.OnCalendar) "daily")
    (h.contains "provision: timer restarts the oneshot (a start would be a no-op)"
      (svc readme).nix-binary-cache-provision-repeat.serviceConfig.ExecStart
      "systemctl restart nix-binary-cache-provision.service"
    )

    # push
    (h.contains "push: hook enqueues" hook "/bin/nix-binary-cache enqueue --spool ${q "/var/spool/nix-binary-cache"} --max-entries 10000")
    (h.that "push: hook never fails the build" (lib.hasInfix "|| true" hook))
    (h.that "push: no extra hook by default" (!lib.hasInfix "exec " hook))
    (h.eq "push: spool" readme.systemd.tmpfiles.rules [ "d /var/spool/nix-binary-cache 0700 root root - -" ])
    (h.contains "push: activation generates the key" activation.text "keys generate --name ${q "s3.example.org-1"}")
    (h.contains "push: activation never overwrites" activation.text "if [ ! -e ${q "/var/lib/nix-binary-cache-keys/s3.example.org-1.sec"} ]")
    (h.contains "push: activation writes NAME.pub" activation.text "--public-key-file ${q "/var/lib/nix-binary-cache-keys/s3.example.org-1.pub"}")
    (h.eq "push: manifest signing key" readmeManifest.push.signingKeyFile "/var/lib/nix-binary-cache-keys/s3.example.org-1.sec")
    (h.eq "push: writer credentials default to provision's state file" readmeManifest.push.writerCredentialsFile "/var/lib/nix-binary-cache/writer.env")
    (h.eq "upload: LoadCredential" uploadUnit.serviceConfig.LoadCredential [
      "signing-key:/var/lib/nix-binary-cache-keys/s3.example.org-1.sec"
      "writer:/var/lib/nix-binary-cache/writer.env"
    ])
    (h.eq "upload: its manifest reads secrets from the credentials directory" {
      inherit (uploadView.push) signingKeyFile writerCredentialsFile;
    } {
      signingKeyFile = "/run/credentials/nix-binary-cache-upload.service/signing-key";
      writerCredentialsFile = "/run/credentials/nix-binary-cache-upload.service/writer";
    })
    (h.contains "upload: ExecStart" uploadUnit.serviceConfig.ExecStart "upload-queue --spool ${q "/var/spool/nix-binary-cache"} --manifest /nix/store/")
    (h.eq "upload: Restart" uploadUnit.serviceConfig.Restart "on-failure")
    (h.eq "upload: ReadWritePaths" uploadUnit.serviceConfig.ReadWritePaths [ "/var/spool/nix-binary-cache" ])
    (h.eq "upload: NIX_REMOTE" uploadUnit.environment.NIX_REMOTE "daemon")
    (h.hasElem "upload: after provision" uploadUnit.after "nix-binary-cache-provision.service")
    (h.eq "upload: restarted when the writer credentials change" readme.systemd.paths.nix-binary-cache-upload-reload.pathConfig.PathChanged "/var/lib/nix-binary-cache/writer.env")
  ];

  # --- merging with other modules ------------------------------------------
  merged = eval [
    ../golden/readme-example.nix
    {
      nix.settings.substituters = [ "https://cache.nixos.org/" ];
      nix.settings.trusted-public-keys = [ "cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=" ];
      nix.settings.connect-timeout = 10;
      nix.settings.fallback = false;
    }
  ];
  mergeChecks = [
    (h.eq "merge: substituters keep other modules' values"
      (lib.sort lib.lessThan merged.nix.settings.substituters)
      [ "https://cache.nixos.org/" "https://s3.example.org/nix-cache" ]
    )
    (h.eq "merge: trusted-public-keys keep other modules' values" (lib.length merged.nix.settings.trusted-public-keys) 2)
    (h.eq "merge: connect-timeout is only a default" merged.nix.settings.connect-timeout 10)
    (h.eq "merge: fallback is only a default" merged.nix.settings.fallback false)
  ];

  # --- roles one at a time ---------------------------------------------------
  client = with_ { };
  clientManifest = h.jsonFile (manifestOf client);
  noTrust = with_ {
    trust.enable = false;
    push = {
      enable = true;
      keyName = "s3.example.org-1";
      writerCredentialsFile = "/run/secrets/writer.env";
    };
  };
  withHook = with_ {
    push = {
      enable = true;
      keyName = "s3.example.org-1";
      writerCredentialsFile = "/run/secrets/writer.env";
      extraPostBuildHook = "/etc/nix/my-hook";
      spoolMaxEntries = 50;
    };
  };
  withHookText = builtins.readFile withHook.nix.settings.post-build-hook;
  noTimer = with_ {
    provision = {
      enable = true;
      backend = "minio";
      adminCredentialsFile = "/run/secrets/minio-root.env";
      writerCredentialsFile = "/run/secrets/writer.env";
      after = [ "minio.service" ];
      timer.enable = false;
    };
  };
  vhost = with_ {
    pathStyle = false;
    endpoint = "https://s3.eu-west-1.amazonaws.com";
  };

  roleChecks = [
    (h.noAssertionFails "client: assertions" client)
    (h.eq "client: manifest sections" (lib.attrNames clientManifest) [ "cache" "trust" "version" ])
    (h.eq "client: no units" (svc client) { })
    (h.that "client: no post-build-hook" (!client.nix.settings ? post-build-hook))
    (h.eq "client: no activation script" client.system.activationScripts { })

    (h.noAssertionFails "push only: assertions" noTrust)
    (h.that "push only: no substituters" (!noTrust.nix.settings ? substituters))
    (h.eq "push only: manifest sections" (lib.attrNames (h.jsonFile (manifestOf noTrust))) [ "cache" "push" "version" ])
    (h.that "push only: no provision unit" (!(svc noTrust) ? nix-binary-cache-provision))
    (h.that "push only: upload unit not ordered after provision" (!lib.elem "nix-binary-cache-provision.service" (svc noTrust).nix-binary-cache-upload.after))
    (h.eq "push only: uploader reads the given writer file" (svc noTrust).nix-binary-cache-upload.serviceConfig.LoadCredential [
      "signing-key:/var/lib/nix-binary-cache-keys/s3.example.org-1.sec"
      "writer:/run/secrets/writer.env"
    ])

    (h.contains "extra hook: runs after ours" withHookText "--max-entries 50 || true\nexec /etc/nix/my-hook")

    (h.noAssertionFails "minio: assertions" noTimer)
    (h.that "minio: no timer" (!noTimer.systemd.timers ? nix-binary-cache-provision-repeat))
    (h.hasElem "minio: after minio.service" (svc noTimer).nix-binary-cache-provision.after "minio.service")
    (h.eq "minio: writer credential loaded" (svc noTimer).nix-binary-cache-provision.serviceConfig.LoadCredential [
      "admin:/run/secrets/minio-root.env"
      "writer:/run/secrets/writer.env"
    ])
    (h.eq "minio: manifest provision section" (execManifest (svc noTimer).nix-binary-cache-provision).provision {
      backend = "minio";
      adminCredentialsFile = "/run/credentials/nix-binary-cache-provision.service/admin";
      writerCredentialsFile = "/run/credentials/nix-binary-cache-provision.service/writer";
      writerUser = "nix-cache-writer";
      writerPolicy = "nix-cache-write";
      stateDir = "/var/lib/nix-binary-cache";
      public = true;
      abortIncompleteMultipartDays = 0;
      waitTimeoutSecs = 120;
    })

    (h.eq "virtual-host style: substituter" vhost.nix.settings.substituters [ "https://nix-cache.s3.eu-west-1.amazonaws.com" ])
  ];

  # --- every assertion fires on its bad configuration ------------------------
  storePath = "${builtins.storeDir}/00000000000000000000000000000000-admin.env";
  provisionWith = extra: with_ {
    provision = {
      enable = true;
      backend = "iam";
    }
    // extra;
  };
  pushWith = extra: with_ {
    push = {
      enable = true;
    }
    // extra;
  };
  assertionChecks = [
    (h.firesOnly "admin credentials in the store"
      (provisionWith { adminCredentialsFile = storePath; })
      "provision.adminCredentialsFile = \"${storePath}\" lies in the Nix"
    )
    (h.firesOnly "admin credentials as a path literal" (provisionWith {
      adminCredentialsFile = ./stub-pkgs.nix;
    }) "Keep the secret outside it")
    (h.firesOnly "provision without admin credentials" (provisionWith { }) "set services.nixBinaryCache.provision.adminCredentialsFile")
    (h.firesOnly "iam backend with a given writer key" (provisionWith {
      adminCredentialsFile = "/run/secrets/admin.env";
      writerCredentialsFile = "/run/secrets/writer.env";
    }) "cannot adopt a given key")
    (h.firesOnly "push without keyName" (pushWith {
      writerCredentialsFile = "/run/secrets/writer.env";
    }) "set\nservices.nixBinaryCache.push.keyName")
    (h.firesOnly "push without writer credentials" (pushWith { keyName = "k-1"; }) "push.writerCredentialsFile to a copy")
    (h.firesOnly "signing key in the store" (pushWith {
      keyName = "k-1";
      writerCredentialsFile = "/run/secrets/writer.env";
      signingKeyFile = "${builtins.storeDir}/00000000000000000000000000000000-key.sec";
    }) "push.signingKeyFile = ")
    (h.firesOnly "writer credentials in the store" (pushWith {
      keyName = "k-1";
      writerCredentialsFile = "${builtins.storeDir}/00000000000000000000000000000000-writer.env";
    }) "push.writerCredentialsFile = ")
    (h.firesOnly "plain http to another host" (with_ { endpoint = "http://s3.example.org:9000"; }) "allowInsecureHttp = true")
    (h.firesOnly "plain http to another host (IAM endpoint)" (provisionWith {
      adminCredentialsFile = "/run/secrets/admin.env";
      iamEndpoint = "http://iam.example.org";
    }) "provision.iamEndpoint = \"http://iam.example.org\"")
    (h.noAssertionFails "plain http allowed explicitly" (with_ {
      endpoint = "http://s3.example.org:9000";
      allowInsecureHttp = true;
    }))
    (h.noAssertionFails "plain http to 127.0.0.1" (with_ { endpoint = "http://127.0.0.1:9000"; }))
    (h.noAssertionFails "plain http to localhost" (with_ { endpoint = "http://localhost:8333"; }))
    (h.noAssertionFails "plain http to [::1]" (with_ { endpoint = "http://[::1]:8333"; }))
    (h.noAssertionFails "plain http to *.localhost" (with_ { endpoint = "http://s3.localhost:8333"; }))
    (h.firesOnly "plain http to 127.example.org is not loopback" (with_ { endpoint = "http://127.example.org"; }) "endpoint = ")
  ];

  # --- warnings ----------------------------------------------------------------
  newBuilder = with_ {
    push = {
      enable = true;
      keyName = "builder.example.org-1";
      writerCredentialsFile = "/run/secrets/writer.env";
    };
  };
  noKeys = eval [
    {
      services.nixBinaryCache = {
        enable = true;
        endpoint = "https://s3.example.org";
        bucket = "nix-cache";
      };
    }
  ];
  warningChecks = [
    (h.eq "warning: a builder whose key clients do not trust yet" (lib.length newBuilder.warnings) 1)
    (h.contains "warning: says where the public key is" (lib.head newBuilder.warnings) "/var/lib/nix-binary-cache-keys/builder.example.org-1.pub")
    (h.eq "warning: no public keys at all" (lib.length noKeys.warnings) 1)
  ];

  all = readmeChecks ++ mergeChecks ++ roleChecks ++ assertionChecks ++ warningChecks;
in
{
  result = {
    failures = lib.concatLists all;
    checks = lib.length all;
  };
  # The README example's manifest, for regenerating the golden file.
  golden = readmeManifest;
}
