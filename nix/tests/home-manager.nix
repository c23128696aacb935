# A user's home-manager configuration on a host that runs SeaweedFS and
# provisions it: the managed nix.conf block, the user's own signing key,
# an explicit push, and the user uploader draining an enqueued path.
{
  pkgs,
  nixosModule,
  homeModule,
  homeManager,
  seaweedfs ? pkgs.seaweedfs,
}:
let
  common = import ./common.nix { inherit pkgs; };
  local = "http://127.0.0.1:8333";
  keyName = "alice-1";
  home = "/home/alice";
  asAlice = cmd: "su - alice -c '${cmd}'";
in
pkgs.testers.runNixOSTest {
  name = "nix-binary-cache-home-manager";

  nodes.machine =
    { lib, ... }:
    {
      imports = [
        nixosModule
        "${homeManager}/nixos"
        common.nixSettings
        (common.seaweedfs {
          package = seaweedfs;
          bind = "127.0.0.1";
        })
      ];

      # The system provisions; the user only pushes.
      services.nixBinaryCache = {
        enable = true;
        endpoint = local;
        bucket = "nix-cache";
        trust.enable = false;
        provision = {
          enable = true;
          backend = "iam";
          adminCredentialsFile = "/run/secrets/nbc-admin.env";
          after = [ "seaweedfs.service" ];
        };
      };
      system.activationScripts.nbcTestAdmin =
        common.installSecret "/run/secrets/nbc-admin.env" common.adminEnv;

      users.users.alice = {
        isNormalUser = true;
        # The user manager runs without a login, so the uploader can.
        linger = true;
      };

      home-manager.useGlobalPkgs = true;
      home-manager.useUserPackages = true;
      home-manager.users.alice = {
        imports = [ homeModule ];
        home.stateVersion = "26.05";
        # Exercise the managed-block route: without nix.package,
        # home-manager does not own ~/.config/nix/nix.conf.
        nix.package = lib.mkForce null;
        services.nixBinaryCache = {
          enable = true;
          endpoint = local;
          bucket = "nix-cache";
          trust.publicKeys = [ common.testKey.public ];
          push = {
            enable = true;
            inherit keyName;
            writerCredentialsFile = "${home}/.config/nix-binary-cache/writer.env";
            skipIfSubstitutable = [ ];
            uploader.enable = true;
          };
        };
      };
    };

  testScript = ''
    ${common.pythonHelpers}

    machine.start()
    machine.wait_for_unit("seaweedfs.service")
    machine.wait_for_unit("nix-binary-cache-provision.service")
    machine.wait_for_unit("home-manager-alice.service")

    with subtest("the cache is in a managed block of the user's nix.conf"):
        conf = machine.succeed("cat ${home}/.config/nix/nix.conf")
        assert "${local}/nix-cache" in conf, conf
        assert "${common.testKey.public}" in conf, conf

    with subtest("the user's signing key was generated once"):
        machine.succeed("test $(stat -c %U:%a ${home}/.local/share/nix-binary-cache/keys/${keyName}.sec) = alice:600")
        pub = machine.succeed("cat ${home}/.local/share/nix-binary-cache/keys/${keyName}.pub").strip()
        assert pub.startswith("${keyName}:"), pub
        sha = machine.succeed("sha256sum ${home}/.local/share/nix-binary-cache/keys/${keyName}.sec")
        machine.succeed("systemctl restart home-manager-alice.service")
        assert sha == machine.succeed("sha256sum ${home}/.local/share/nix-binary-cache/keys/${keyName}.sec")

    # The writer's credentials reach the user out of band.
    machine.succeed(
        "install -o alice -g users -m 0600 /var/lib/nix-binary-cache/writer.env "
        "${home}/.config/nix-binary-cache/writer.env"
    )

    with subtest("explicit push with the helper on PATH"):
        top = build(machine, "hm-push", user="alice")
        machine.succeed(f"${asAlice "nix-binary-cache push --manifest ~/.config/nix-binary-cache/manifest.toml {top}"}")
        wait_pushed(machine, "${local}/nix-cache", top, "${keyName}")

    with subtest("the user uploader drains the queue"):
        queued = build(machine, "hm-queue", user="alice")
        machine.succeed(
            f"${asAlice "OUT_PATHS={queued} nix-binary-cache enqueue --spool ~/.local/state/nix-binary-cache/spool"}"
        )
        machine.succeed("${asAlice "XDG_RUNTIME_DIR=/run/user/$(id -u) systemctl --user restart nix-binary-cache-upload.service"}")
        wait_pushed(machine, "${local}/nix-cache", queued, "${keyName}")
  '';
}
