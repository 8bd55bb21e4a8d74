#!lua flags=allow-oom
-- edges: queued->cancelled, running->cancelled
-- Cancel a run: every job of it that has not ended. ARGV[2] run id.
-- Returns 'gone', or the number of jobs cancelled now (0: the run had ended).
local run = ARGV[2]
if redis.call('EXISTS', K.run .. run) == 0 then return 'gone' end
return cancel_run(run, 'cancelled with its run', 'cancelled', now_ms())
