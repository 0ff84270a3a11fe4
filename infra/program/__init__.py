"""The Pulumi program: providers, roles, keys, storage, the transcript bucket, documents."""
