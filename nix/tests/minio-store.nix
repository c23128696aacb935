# The same provisioning against MinIO (minio backend: the admin API, a
# generated writer secret), with the store, the provisioning and a builder
# on one host, ordered after minio.service. The builder's key is generated at
# first activation, as on a real first switch, and what it pushed is then
# verified with the public key it printed.
#
# nixpkgs marks MinIO insecure since upstream archived it (2026); the store
# runs it with the knownVulnerabilities override NixOS/nix's own test uses.
{
  pkgs,
  nixosModule,
}:
let
  common = import ./common.nix { inherit pkgs; };
  keyName = "minio-test-1";
  keyDir = "/var/lib/nix-binary-cache-keys";
  local = "http://127.0.0.1:9000";
in
pkgs.testers.runNixOSTest {
  name = "nix-binary-cache-minio";

  nodes.store = {
    imports = [
      nixosModule
      common.nixSettings
    ];

    services.minio = {
      enable = true;
      rootCredentialsFile = common.minioRootEnv;
      package = pkgs.minio.overrideAttrs (o: {
        meta = o.meta // {
          knownVulnerabilities = [ ];
        };
      });
    };

    services.nixBinaryCache = {
      enable = true;
      endpoint = local;
      bucket = "nix-cache";
      provision = {
        enable = true;
        backend = "minio";
        # The MINIO_ROOT_* file MinIO itself reads, copied out of the store.
        adminCredentialsFile = "/run/secrets/minio-root.env";
        after = [ "minio.service" ];
        abortIncompleteMultipartDays = 3;
      };
      push = {
        enable = true;
        inherit keyName;
        skipIfSubstitutable = [ ];
      };
    };

    system.activationScripts.nbcTestAdmin =
      common.installSecret "/run/secrets/minio-root.env" common.minioRootEnv;
  };

  testScript = ''
    ${common.pythonHelpers}

    store.start()
    store.wait_for_unit("minio.service")
    store.wait_for_open_port(9000)

    with subtest("the key was generated at first activation"):
        store.succeed("test $(stat -c %a ${keyDir}) = 700")
        store.succeed("test $(stat -c %a ${keyDir}/${keyName}.sec) = 600")
        pub = store.succeed("cat ${keyDir}/${keyName}.pub").strip()
        assert pub.startswith("${keyName}:"), pub
        derived = store.succeed(
            "nix key convert-secret-to-public < ${keyDir}/${keyName}.sec"
        ).strip()
        assert derived == pub, f"{derived} != {pub}"
        sha = store.succeed("sha256sum ${keyDir}/${keyName}.sec")
        store.succeed("/run/current-system/activate")
        assert sha == store.succeed("sha256sum ${keyDir}/${keyName}.sec"), "the key changed"

    with subtest("provisioning after minio.service makes a public cache"):
        store.wait_for_unit("nix-binary-cache-provision.service")
        store.succeed("test $(stat -c %a /var/lib/nix-binary-cache/writer.env) = 600")
        store.succeed("grep -q '^AWS_ACCESS_KEY_ID=nix-cache-writer$' /var/lib/nix-binary-cache/writer.env")
        store.succeed("curl -fsS ${local}/nix-cache/nix-cache-info | grep -x 'StoreDir: /nix/store'")
        store.fail("curl -fsS -X PUT --data-binary x ${local}/nix-cache/anonymous-write")

    with subtest("a second provisioning run only reads"):
        assert_reprovision_reads_only(store)

    with subtest("built paths are uploaded and verify with the printed key"):
        store.wait_for_unit("nix-binary-cache-upload.service")
        top = build(store, "minio")
        wait_pushed(store, "${local}/nix-cache", top, "${keyName}")
        store.succeed(
            f"nix store verify --store ${local}/nix-cache --trusted-public-keys '{pub}' {top}"
        )
        store.fail(
            f"nix store verify --store ${local}/nix-cache --trusted-public-keys '${common.testKey.public}' {top}"
        )
  '';
}
