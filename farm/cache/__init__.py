"""Dependency caches, the part every side shares: what an entry's key and scope are, and how
an entry is packed into blobs. Where entries are indexed is farm.store.cache_index; where a
job restores and saves them, agents.cache; the tenant's view, farm.api.caches.

    scope        cache keys and trust scopes: which entries a job may read and write (pure)
    archive      an entry on disk: a tree packed into content-addressed, compressed packs and a manifest
    blobs        content-addressed blobs, verified on write and read
"""
