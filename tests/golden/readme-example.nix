{
  services.nixBinaryCache = {
    enable = true;
    endpoint = "https://s3.example.org";
    bucket = "nix-cache";

    # trust (every machine): the keys that sign for the cache
    trust.publicKeys = [ "s3.example.org-1:4klLDuxBlmx29Bsq3oCYya5t/ZdyGfmglIVmIGVUqcY=" ];

    # provision (the one host with the store's admin credentials)
    provision = {
      enable = true;
      backend = "iam"; # SeaweedFS, Ceph RGW, AWS; "minio" for MinIO
      adminCredentialsFile = "/run/secrets/nix-cache-admin.env";
    };

    # push (builders): sign and upload what this machine builds
    push = {
      enable = true;
      keyName = "s3.example.org-1";
    };
  };
}
