"""Redis adapter: key schema (`keys`), Lua scripts (`lua`, `scripts/`), the job store
(`jobs`), the executor registry (`executors`), stats (`stats`) and the embedded server
(`server`). Import from the submodules: this package imports nothing, so the pure ones
(`keys`, `stats`) stay free of redis."""
