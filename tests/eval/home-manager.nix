# Evaluates nix/hm-module.nix with lib.evalModules and home-manager's
# extended lib, and checks what it produces: the nix.conf route (nix.settings
# or the managed block), activation entries, the manifest, the user service,
# and the assertions.
{ nixpkgsLib, homeManager }:
let
  lib = import "${homeManager}/modules/lib/stdlib-extended.nix" (import "${nixpkgsLib}/lib");
  pkgs = import ./stub-pkgs.nix { inherit lib; };
  h = import ./harness.nix { inherit lib; };
  q = lib.escapeShellArg;

  evalArgs = {
    module = ../../nix/hm-module.nix;
    stubs = ./hm-stubs.nix;
    inherit pkgs;
  };
  eval = h.evalWith evalArgs;

  key1 = "s3.example.org-1:4klLDuxBlmx29Bsq3oCYya5t/ZdyGfmglIVmIGVUqcY=";
  key0 = "s3.example.org-0:KLe6st/rEhUJVoc/ky4bTw5hP/9KiqeyDzy2yEfowyI=";
  base = {
    services.nixBinaryCache = {
      enable = true;
      endpoint = lib.mkDefault "https://s3.example.org";
      bucket = "nix-cache";
      trust.publicKeys = [ key1 ];
      trust.retiredPublicKeys = [ key0 ];
    };
  };
  with_ = cfg: eval [
    base
    { services.nixBinaryCache = cfg; }
  ];
  pushCfg = {
    push = {
      enable = true;
      keyName = "s3.example.org-1";
      writerCredentialsFile = "/home/alice/.config/nix-binary-cache/writer.env";
    };
  };

  # Without nix.package: the managed block through `configure`.
  plain = eval [ base ];
  configure = plain.home.activation.nixBinaryCacheConfigure;

  # With nix.package: home-manager's nix.settings.
  managed = eval [
    base
    { nix.package = pkgs.nix; }
    { nix.settings.substituters = [ "https://cache.nixos.org/" ]; }
  ];

  pusher = with_ (pushCfg // { push = pushCfg.push // { uploader.enable = true; }; });
  pusherManifest = h.jsonFile pusher.services.nixBinaryCache.manifestFile.drvArgs.src;
  keygen = pusher.home.activation.nixBinaryCacheSigningKey;
  uploader = pusher.systemd.user.services.nix-binary-cache-upload;

  storePath = "${builtins.storeDir}/00000000000000000000000000000000-writer.env";

  all = [
    (h.undocumented "options" (h.evalFull evalArgs [ base ]).options)
    (h.noAssertionFails "plain: assertions" plain)
    (h.eq "plain: nix.settings untouched" plain.nix.settings { })
    (h.eq "plain: configure runs after writeBoundary" configure.after [ "writeBoundary" ])
    (h.contains "plain: configure goes through `run` (dry-run aware)" configure.data "run /nix/store/")
    (h.contains "plain: configure arguments" configure.data
      "configure --nix-conf ${q "/home/alice/.config/nix/nix.conf"} \\\n  --substituter ${q "https://s3.example.org/nix-cache"} \\\n  --trusted-public-key ${q key1} --trusted-public-key ${q key0} \\\n  --connect-timeout 5 \\\n  --narinfo-cache-negative-ttl 300"
    )
    (h.that "plain: no key generation without push" (!plain.home.activation ? nixBinaryCacheSigningKey))
    (h.eq "plain: manifest linked" plain.xdg.configFile."nix-binary-cache/manifest.toml".source plain.services.nixBinaryCache.manifestFile)
    (h.hasElem "plain: helper on PATH" plain.home.packages pkgs.nix-binary-cache)

    (h.noAssertionFails "nix.settings: assertions" managed)
    (h.that "nix.settings: no configure entry" (!managed.home.activation ? nixBinaryCacheConfigure))
    (h.eq "nix.settings: substituters merge"
      (lib.sort lib.lessThan managed.nix.settings.substituters)
      [ "https://cache.nixos.org/" "https://s3.example.org/nix-cache" ]
    )
    (h.eq "nix.settings: trusted-public-keys" managed.nix.settings.trusted-public-keys [ key1 key0 ])
    (h.eq "nix.settings: connect-timeout" managed.nix.settings.connect-timeout 5)
    (h.eq "nix.settings: fallback" managed.nix.settings.fallback true)
    (h.eq "nix.settings: narinfo-cache-negative-ttl" managed.nix.settings.narinfo-cache-negative-ttl 300)
    (h.that "nix.settings: no post-build-hook (root-only)" (!managed.nix.settings ? post-build-hook))

    (h.noAssertionFails "push: assertions" pusher)
    (h.eq "push: key generation after writeBoundary" keygen.after [ "writeBoundary" ])
    (h.contains "push: never overwrites" keygen.data "if [[ ! -e ${q "/home/alice/.local/share/nix-binary-cache/keys/s3.example.org-1.sec"} ]]")
    (h.contains "push: generates through `run`" keygen.data "run /nix/store/00000000000000000000000000000000-nix-binary-cache-stub/bin/nix-binary-cache keys generate --name ${q "s3.example.org-1"}")
    (h.contains "push: writes NAME.pub" keygen.data "--public-key-file ${q "/home/alice/.local/share/nix-binary-cache/keys/s3.example.org-1.pub"}")
    (h.eq "push: manifest push section" pusherManifest.push {
      keyName = "s3.example.org-1";
      signingKeyFile = "/home/alice/.local/share/nix-binary-cache/keys/s3.example.org-1.sec";
      writerCredentialsFile = "/home/alice/.config/nix-binary-cache/writer.env";
      compression = "zstd";
      jobs = 4;
      skipIfSubstitutable = [ "https://cache.nixos.org" ];
      spoolDir = "/home/alice/.local/state/nix-binary-cache/spool";
      spoolMaxEntries = 10000;
    })
    (h.eq "push: manifest has no provision section" (pusherManifest ? provision) false)
    (h.contains "uploader: ExecStart" uploader.Service.ExecStart "upload-queue --spool ${q "/home/alice/.local/state/nix-binary-cache/spool"} --manifest /nix/store/")
    (h.eq "uploader: restarts" uploader.Service.Restart "on-failure")
    (h.contains "uploader: finds nix" (lib.head uploader.Service.Environment) "/run/current-system/sw/bin")
    (h.eq "uploader: wanted by default.target" uploader.Install.WantedBy [ "default.target" ])
    (h.eq "uploader: off by default" (with_ pushCfg).systemd.user.services { })

    (h.firesOnly "push without keyName" (with_ {
      push = {
        enable = true;
        writerCredentialsFile = "/home/alice/writer.env";
      };
    }) "set\nservices.nixBinaryCache.push.keyName")
    (h.firesOnly "push without writer credentials" (with_ {
      push = {
        enable = true;
        keyName = "k-1";
      };
    }) "push.writerCredentialsFile to a copy")
    (h.firesOnly "writer credentials in the store" (with_ {
      push = {
        enable = true;
        keyName = "k-1";
        writerCredentialsFile = storePath;
      };
    }) "push.writerCredentialsFile = \"${storePath}\" lies in the Nix")
    (h.firesOnly "plain http to another host" (with_ { endpoint = "http://s3.example.org"; }) "allowInsecureHttp = true")
    (h.eq "no keys: warns" (lib.length (eval [
      {
        services.nixBinaryCache = {
          enable = true;
          endpoint = "https://s3.example.org";
          bucket = "nix-cache";
        };
      }
    ]).warnings) 1)
  ];
in
{
  result = {
    failures = lib.concatLists all;
    checks = lib.length all;
  };
}
