# Shared parts of the VM tests. Everything secret here is a test fixture: it
# lives in the Nix store on purpose, and the tests copy it to /run/secrets
# (outside the store) the way sops-nix or agenix would, because the module
# refuses secret paths inside the store.
{ pkgs }:
let
  inherit (pkgs) lib;
in
rec {
  # A signing key made with `nix-store --generate-binary-cache-key`, used
  # only by these tests: clients must know a builder's public key at
  # evaluation time, so the builder is seeded with this one.
  testKey = {
    name = "vm-test-cache-1";
    secret = "vm-test-cache-1:5C1sewscV+QjZiwZOgSzKjirhtl8jfcmj2oqqB0sZuAot7qy3+sSFQlWhz+TLhtPDmE//0qKp7IPPLbIR+jDIg==";
    public = "vm-test-cache-1:KLe6st/rEhUJVoc/ky4bTw5hP/9KiqeyDzy2yEfowyI=";
  };

  # Admin key pair of the test stores.
  admin = {
    key = "NBCTESTADMIN00000001";
    secret = "nbc-test-admin-secret-0123456789abcdefgh";
  };
  adminEnv = pkgs.writeText "nbc-test-admin.env" ''
    AWS_ACCESS_KEY_ID=${admin.key}
    AWS_SECRET_ACCESS_KEY=${admin.secret}
  '';
  minioRootEnv = pkgs.writeText "nbc-test-minio-root.env" ''
    MINIO_ROOT_USER=${admin.key}
    MINIO_ROOT_PASSWORD=${admin.secret}
  '';

  # Copies a fixture out of the store before any unit starts (activation
  # runs before systemd at boot), as a secret manager would.
  installSecret = dest: src: {
    deps = [ ];
    text = ''
      install -d -m 0755 ${dirOf dest}
      install -m 0600 ${src} ${dest}
    '';
  };

  # Two chained derivations that need nothing but the sandbox's /bin/sh, so
  # that a VM can build them offline. `top` refers to `dep`, so pushing `top`
  # must push its closure.
  buildExpr = pkgs.writeText "nbc-test-build.nix" ''
    { salt }:
    let
      mk = name: script: derivation {
        inherit name;
        system = builtins.currentSystem;
        builder = "/bin/sh";
        args = [ "-c" script ];
      };
      dep = mk "nbc-test-dep-''${salt}" "echo ''${salt} > $out";
    in
    mk "nbc-test-top-''${salt}" "echo ''${dep} > $out"
  '';

  # SeaweedFS as one `weed mini` process: S3 and IAM on port 8333, the admin
  # identity from the environment (never start it without one: it is then
  # open to anonymous writes). Needs a SeaweedFS with `weed mini` and IAM on
  # the S3 port (4.x; the helper's own tests use 4.48).
  seaweedfs =
    {
      package ? pkgs.seaweedfs,
      bind ? "0.0.0.0",
    }:
    {
      networking.firewall.allowedTCPPorts = [ 8333 ];
      systemd.services.seaweedfs = {
        description = "SeaweedFS (weed mini) for the nix-binary-cache test";
        wantedBy = [ "multi-user.target" ];
        after = [ "network.target" ];
        serviceConfig = {
          ExecStart = lib.concatStringsSep " " [
            "${lib.getExe package} mini"
            "-dir=/var/lib/seaweedfs"
            "-ip=127.0.0.1"
            "-ip.bind=${bind}"
            "-s3.port=8333"
            "-s3.iam.readOnly=false"
            "-master.telemetry=false"
            "-admin.ui=false"
            "-webdav=false"
          ];
          EnvironmentFile = adminEnv;
          StateDirectory = "seaweedfs";
          Restart = "on-failure";
        };
      };
    };

  # Nix settings every node needs for the tests: `nix` commands, and a
  # short wait for cache.nixos.org, which the VMs cannot reach.
  nixSettings = {
    virtualisation.writableStore = true;
    nix.settings.experimental-features = [ "nix-command" ];
    nix.settings.connect-timeout = 1;
    environment.etc."nbc-test/build.nix".source = buildExpr;
    environment.systemPackages = [ pkgs.curl ];
  };

  # Python helpers for the test scripts.
  pythonHelpers = ''
    import re

    def build(machine, salt, user=None):
        """Builds the test closure on `machine`; returns the top path."""
        cmd = f"nix-build /etc/nbc-test/build.nix --argstr salt {salt} --no-out-link"
        if user:
            cmd = f"su - {user} -c '{cmd}'"
        return machine.succeed(cmd).strip()

    def hash_part(path):
        return path.removeprefix("/nix/store/").split("-", 1)[0]

    def closure(machine, path):
        return machine.succeed(f"nix-store -qR {path}").split()

    def wait_pushed(machine, cache_url, top, key_name):
        """Waits until every path of the closure of `top` is in the cache,
        signed by `key_name`."""
        for path in closure(machine, top):
            machine.wait_until_succeeds(
                f"curl -fsS {cache_url}/{hash_part(path)}.narinfo | grep -q '^Sig: {key_name}:'",
                timeout=120,
            )

    def last_run_log(machine, unit):
        """The journal of the unit's most recent invocation."""
        inv = machine.succeed(f"systemctl show -p InvocationID --value {unit}").strip()
        return machine.succeed(f"journalctl -o cat _SYSTEMD_INVOCATION_ID={inv}")

    def assert_reprovision_reads_only(machine):
        """Runs provisioning again: a converged store reports no change."""
        unit = "nix-binary-cache-provision.service"
        machine.succeed(f"systemctl restart {unit}")
        changed = [
            line
            for line in last_run_log(machine, unit).splitlines()
            if re.search(r"\b(created|updated)\b", line)
        ]
        assert not changed, f"a second provision run changed the store: {changed}"
  '';
}
