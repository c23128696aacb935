{
  description = "Turn any S3-compatible object store into a signed, trusted Nix binary cache, declaratively";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-26.05";

  outputs =
    { self, nixpkgs }:
    let
      inherit (nixpkgs) lib;
      forAllSystems =
        f:
        lib.genAttrs [ "x86_64-linux" "aarch64-linux" ] (system: f nixpkgs.legacyPackages.${system});

      # Test-only source, fetched when a check that needs it is evaluated;
      # it stays out of flake.lock so that users of this flake never fetch
      # it. home-manager release-26.05.
      homeManager = builtins.fetchTarball {
        url = "https://github.com/nix-community/home-manager/archive/65258d5c65a250189fde2e35f490d15e064c4c62.tar.gz";
        sha256 = "sha256-Sxu1NLTD/Ern6hFGLlZmtKCSct3YQXZI/lls8RE1XeM=";
      };
    in
    {
      overlays.default = final: prev: {
        nix-binary-cache = final.callPackage ./nix/package.nix { };
      };

      packages = forAllSystems (pkgs: {
        default = self.packages.${pkgs.stdenv.hostPlatform.system}.nix-binary-cache;
        nix-binary-cache = pkgs.callPackage ./nix/package.nix { };
      });

      nixosModules.default = ./nix/nixos-module.nix;
      homeModules.default = ./nix/hm-module.nix;

      checks = forAllSystems (
        pkgs:
        import ./nix/checks.nix {
          inherit pkgs homeManager;
          package = self.packages.${pkgs.stdenv.hostPlatform.system}.default;
          nixosModule = self.nixosModules.default;
          homeModule = self.homeModules.default;
        }
      );

      devShells = forAllSystems (pkgs: {
        default = pkgs.mkShell {
          inputsFrom = [ self.packages.${pkgs.stdenv.hostPlatform.system}.default ];
          packages = [
            pkgs.cargo-nextest
            pkgs.clippy
            pkgs.rustfmt
            pkgs.rust-analyzer
            pkgs.nixfmt
            pkgs.python3
          ];
        };
      });

      formatter = forAllSystems (pkgs: pkgs.nixfmt);
    };
}
