"""The portal: farm's own web pages at /ui, served by the API process with the API's tokens.

A visitor logs in with a token (a session cookie, HttpOnly and SameSite=Strict), then sees
what that token may see through the API: the queue by pool with live counts, jobs (a job's
steps, caches, artifacts, why it waits, and its log as it is written), runs, pools with
their policies and the autoscaler's decisions. Pages are rendered on the server (Jinja2,
escaping every value) and made live by one small script (`static/portal.js`: fetch and
server-sent events, no build step); a Content-Security-Policy forbids any inline script.
Templates are in `templates/`, the script and the style sheet in `static/`.

    routes       the /ui router, out of the API's schema, and the middleware of its headers
    pages        the pages: queue, jobs, a job, runs, a run, pools, a pool
    actions      the forms: log in, log out, cancel, re-run (CSRF-checked)
    feeds        what portal.js reads: live counts, a job's wait, log windows and events; artifacts, static files
    logpage      a log as the page shows it: a window of its end, earlier windows, live events
    session      who is looking: the session cookie, the principal behind it, CSRF and origin checks
    headers      the security headers of every /ui response (CSP without inline script)
    portal       what every route shares: templates, rendering, errors as pages
    parts        the app's parts a portal route reaches, from app.state in one place
    present      how values are written for people: durations, times, log text made visible (pure)
"""
