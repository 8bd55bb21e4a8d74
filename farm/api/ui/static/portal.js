// farm's portal: what makes the server-rendered pages live. No build step, no library.
// Every text from the farm is inserted with textContent (never as markup), so a job's
// output shows as the characters it is; the page's Content-Security-Policy forbids inline
// script, so everything this needs comes in data-* attributes.
"use strict";

(function () {
  const POLL_MS = 2000;
  const LIVE_MAX_CHARS = 1 << 20; // live log text a page keeps; older text goes behind "Show earlier"

  async function getJSON(url) {
    const r = await fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" });
    if (r.status === 401) { location.reload(); return null; } // the session ended: the page asks to log in
    if (!r.ok) return null;
    return r.json();
  }

  // Calls apply(data) every POLL_MS until it returns false.
  function poll(url, apply) {
    async function tick() {
      let go = true;
      try {
        const data = await getJSON(url);
        if (data !== null) go = apply(data) !== false;
      } catch (e) { /* a missed poll: try again */ }
      if (go) setTimeout(tick, POLL_MS);
    }
    setTimeout(tick, POLL_MS);
  }

  // The queue: live counts per pool.
  const queue = document.querySelector("[data-poll]");
  if (queue) {
    poll(queue.dataset.poll, (data) => {
      for (const cell of queue.querySelectorAll("[data-cell]")) {
        const text = data.cells[cell.dataset.cell];
        if (text !== undefined && cell.textContent !== text) cell.textContent = text;
      }
    });
  }

  // A queued job: why it waits, until it starts (then the page shows it running).
  const wait = document.getElementById("wait");
  if (wait) {
    poll(wait.dataset.wait, (data) => {
      if (data.state !== "queued") { location.reload(); return false; }
      document.getElementById("wait-summary").textContent = data.summary;
      for (const key of ["waited", "place", "estimate", "timeout"]) {
        document.getElementById("wait-" + key).textContent = data[key];
      }
      const list = document.getElementById("wait-reasons");
      const items = data.reasons.map((r) => {
        const li = document.createElement("li");
        li.dataset.code = r.code;
        li.textContent = r.text;
        return li;
      });
      list.replaceChildren(...items);
      return true;
    });
  }

  // A job's log: earlier windows on demand, and what is written next, live.
  const log = document.getElementById("log");
  if (log) {
    const pre = document.getElementById("log-text");
    const earlier = document.getElementById("log-earlier");
    const status = document.getElementById("log-status");
    const pieces = []; // live text nodes, oldest first: {node, first}
    let live = 0;

    const atEnd = () => pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 24;
    pre.scrollTop = pre.scrollHeight;

    function setEarlier(cursor) {
      earlier.dataset.before = cursor || "";
      earlier.hidden = !cursor;
      const url = new URL(earlier.href, location.href);
      url.searchParams.set("before", cursor || "");
      earlier.href = url.pathname + url.search + "#log";
    }

    earlier.addEventListener("click", async (e) => {
      e.preventDefault();
      const data = await getJSON(log.dataset.window + "?before=" + encodeURIComponent(earlier.dataset.before));
      if (data === null) return;
      const height = pre.scrollHeight;
      pre.insertBefore(document.createTextNode(data.text), pre.firstChild);
      pre.scrollTop += pre.scrollHeight - height; // keep in view what was in view
      setEarlier(data.earlier);
    });

    function append(text, first) {
      const follow = atEnd();
      const node = document.createTextNode(text);
      pre.appendChild(node);
      pieces.push({ node, first });
      live += text.length;
      // Keep the page's share of a chatty log bounded: the oldest text goes, and "Show
      // earlier" starts where what is left begins.
      while (live > LIVE_MAX_CHARS && pieces.length > 1) {
        const gone = pieces.shift();
        live -= gone.node.textContent.length;
        while (pre.firstChild && pre.firstChild !== pieces[0].node) pre.removeChild(pre.firstChild);
        setEarlier(pieces[0].first + "~0");
      }
      if (follow) pre.scrollTop = pre.scrollHeight;
    }

    function listen(url) {
      const source = new EventSource(url);
      let last = null;
      source.addEventListener("log", (e) => {
        const data = JSON.parse(e.data);
        last = e.lastEventId || last;
        append(data.text, data.first);
      });
      source.addEventListener("end", (e) => {
        source.close();
        const data = JSON.parse(e.data);
        status.textContent = data.state ? "The job ended: " + data.state + "." : "The job is gone.";
        setTimeout(() => location.reload(), 800);
      });
      source.addEventListener("renew", () => {
        source.close();
        const next = new URL(url, location.href);
        if (last) next.searchParams.set("after", last);
        listen(next.pathname + next.search);
      });
      source.addEventListener("error", () => {
        if (source.readyState === EventSource.CLOSED) {
          status.textContent = "The live log stopped: reload the page to follow it again.";
        }
      });
    }

    if (log.dataset.events) listen(log.dataset.events);
  }
})();
