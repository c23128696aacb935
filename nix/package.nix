# The helper, built with nixpkgs' Rust tooling from Cargo.lock (no
# cargoHash: the lock file pins every crate, and a hash could not be computed
# without the network anyway).
{
  lib,
  rustPlatform,
  pkg-config,
  xz,
}:
let
  cargoToml = lib.importTOML ../Cargo.toml;
in
rustPlatform.buildRustPackage {
  pname = cargoToml.package.name;
  inherit (cargoToml.package) version;

  # Only what cargo needs, so that editing the README, the Nix code or the
  # tests does not rebuild the helper. Add here any file Cargo.toml starts
  # naming (build.rs, explicit [[bench]] or [[test]] targets).
  src = lib.fileset.toSource {
    root = ./..;
    fileset = lib.fileset.unions [
      ../Cargo.toml
      ../Cargo.lock
      ../src
    ];
  };

  cargoLock.lockFile = ../Cargo.lock;

  # liblzma for xz2, found through pkg-config; zstd-sys builds its bundled
  # source, and TLS is rustls with the webpki roots (no OpenSSL).
  nativeBuildInputs = [ pkg-config ];
  buildInputs = [ xz ];

  # Unit tests only: the integration tests in tests/ start a SeaweedFS
  # server and a Nix store, which the build sandbox has neither of. CI runs
  # them (scripts/test.sh).
  cargoTestFlags = [ "--lib" ];

  meta = {
    inherit (cargoToml.package) description;
    homepage = cargoToml.package.repository;
    license = with lib.licenses; [
      mit
      asl20
    ];
    mainProgram = "nix-binary-cache";
    platforms = lib.platforms.linux;
  };
}
