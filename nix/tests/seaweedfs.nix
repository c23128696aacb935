# A SeaweedFS store node, a builder and a client: the builder provisions the
# store (iam backend), builds, and its post-build-hook queues the outputs for
# the uploader; the client substitutes them, signatures required.
{
  pkgs,
  nixosModule,
  seaweedfs ? pkgs.seaweedfs,
}:
let
  common = import ./common.nix { inherit pkgs; };
  inherit (common) testKey;
  endpoint = "http://store:8333";
  cache = {
    enable = true;
    inherit endpoint;
    bucket = "nix-cache";
    # The VMs talk over the test network without TLS.
    allowInsecureHttp = true;
    trust.publicKeys = [ testKey.public ];
  };
in
pkgs.testers.runNixOSTest {
  name = "nix-binary-cache-seaweedfs";

  nodes = {
    store = common.seaweedfs { package = seaweedfs; };

    builder = {
      imports = [
        nixosModule
        common.nixSettings
      ];
      services.nixBinaryCache = cache // {
        provision = {
          enable = true;
          backend = "iam";
          adminCredentialsFile = "/run/secrets/nbc-admin.env";
        };
        push = {
          enable = true;
          keyName = testKey.name;
          # Nothing upstream to skip in an offline VM.
          skipIfSubstitutable = [ ];
        };
      };
      system.activationScripts = {
        nbcTestAdmin = common.installSecret "/run/secrets/nbc-admin.env" common.adminEnv;
        # The clients were told this key at evaluation time: put it where
        # the module would generate one, before the module's own step, which
        # must then leave it alone.
        nbcTestSeedKey = common.installSecret "/var/lib/nix-binary-cache-keys/${testKey.name}.sec" (
          pkgs.writeText "test-key.sec" testKey.secret
        );
        nixBinaryCacheSigningKey.deps = [ "nbcTestSeedKey" ];
      };
    };

    client = {
      imports = [
        nixosModule
        common.nixSettings
      ];
      services.nixBinaryCache = cache;
    };
  };

  testScript = ''
    ${common.pythonHelpers}

    start_all()
    store.wait_for_unit("seaweedfs.service")
    store.wait_for_open_port(8333)

    with subtest("provisioning makes the bucket a public, read-only cache"):
        builder.wait_for_unit("nix-binary-cache-provision.service")
        builder.succeed("test -s /var/lib/nix-binary-cache/writer.env")
        builder.succeed("test $(stat -c %a /var/lib/nix-binary-cache/writer.env) = 600")
        client.wait_until_succeeds(
            "curl -fsS ${endpoint}/nix-cache/nix-cache-info | grep -x 'StoreDir: /nix/store'"
        )
        client.succeed("curl -fsS ${endpoint}/nix-cache/nix-cache-info | grep -x 'Priority: 41'")
        client.fail("curl -fsS -X PUT --data-binary x ${endpoint}/nix-cache/anonymous-write")

    with subtest("a second provisioning run only reads"):
        assert_reprovision_reads_only(builder)

    with subtest("the drift timer re-runs provisioning"):
        before = builder.succeed("systemctl show -p InvocationID --value nix-binary-cache-provision").strip()
        builder.succeed("systemctl start nix-binary-cache-provision-repeat.service")
        after = builder.succeed("systemctl show -p InvocationID --value nix-binary-cache-provision").strip()
        assert before != after, "the timer's unit did not re-run provisioning"
        builder.succeed("systemctl is-active nix-binary-cache-provision.service")

    with subtest("an existing signing key is never replaced"):
        builder.succeed("grep -qx '${testKey.secret}' /var/lib/nix-binary-cache-keys/${testKey.name}.sec")
        builder.succeed("/run/current-system/activate")
        builder.succeed("grep -qx '${testKey.secret}' /var/lib/nix-binary-cache-keys/${testKey.name}.sec")

    with subtest("a build is queued by the hook and uploaded by the service"):
        builder.wait_for_unit("nix-binary-cache-upload.service")
        top = build(builder, "seaweed")
        wait_pushed(builder, "${endpoint}/nix-cache", top, "${testKey.name}")
        builder.succeed("nix-binary-cache queue status --spool /var/spool/nix-binary-cache")

    with subtest("the client substitutes it, signature checked"):
        client.succeed(f"nix-store --realise {top}")
        client.succeed(f"nix path-info --sigs {top} | grep -q '${testKey.name}:'")
        dep = client.succeed(f"cat {top}").strip()
        client.succeed(f"test -e {dep}")

    with subtest("without the key the client refuses the cache's paths"):
        other = build(builder, "unsigned-check")
        wait_pushed(builder, "${endpoint}/nix-cache", other, "${testKey.name}")
        client.fail(f"nix-store --realise {other} --option trusted-public-keys '''")
        client.succeed(f"nix-store --realise {other}")
  '';
}
