// sparc-cloud dashboard. Every string that came from a model, a project file or the run folder is written
// with textContent (never as HTML): a model's output cannot inject markup or script into this page.
"use strict";

(function () {
  const token = new URLSearchParams(window.location.search).get("token") || "";
  const q = (path, extra) => path + "?token=" + encodeURIComponent(token) + (extra || "");
  const KIND_STATUS = {
    agent_queued: "queued", agent_started: "running", agent_waiting: "waiting", agent_retrying: "waiting",
    agent_rate_limited: "waiting", agent_polled: "running", agent_attached: "running",
    agent_finished: "completed", agent_failed: "failed", agent_skipped: "skipped", agent_reused: "reused",
  };
  const state = { run: null, selected: null, nodes: new Map(), fetched: 0, timer: null, ended: false,
                  elapsedBase: null, elapsedAt: 0, detailStatus: null };

  function el(tag, cls, text) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }
  function byId(id) { return document.getElementById(id); }
  function secs(value) {
    if (value === null || value === undefined) return "–";
    const s = Number(value);
    if (s < 60) return s.toFixed(1) + " s";
    const m = Math.floor(s / 60);
    return m + " min " + Math.round(s - m * 60) + " s";
  }
  function usd(value) { return value === null || value === undefined ? "–" : "$" + Number(value).toFixed(4); }

  async function getJson(path, extra) {
    const answer = await fetch(q(path, extra), { cache: "no-store" });
    if (!answer.ok) throw new Error(path + ": HTTP " + answer.status);
    return answer.json();
  }

  // ------------------------------------------------------------------ the DAG

  function renderRun(run) {
    state.run = run;
    byId("project").textContent = run.project || "(no run yet)";
    byId("run-id").textContent = run.run_id || "";
    byId("backend").textContent = run.backend || "";
    const dag = byId("dag");
    const seen = new Set();
    for (const phase of run.phases) {
      let column = dag.querySelector('[data-phase="' + phase.number + '"]');
      if (!column) {
        column = el("div", "column");
        column.dataset.phase = String(phase.number);
        const head = el("h3");
        head.appendChild(el("span", "", "Phase " + phase.number + ": " + phase.name));
        head.appendChild(el("span", "count"));
        column.appendChild(head);
        dag.appendChild(column);
      }
      column.classList.toggle("stale", !!phase.stale);
      column.querySelector(".count").textContent = phase.done + "/" + phase.total;
      for (const agent of phase.agents) {
        seen.add(agent.id);
        let node = state.nodes.get(agent.id);
        if (!node) {
          node = el("button", "node");
          node.type = "button";
          node.dataset.agent = agent.id;
          node.appendChild(el("div", "id", agent.id));
          node.appendChild(el("div", "meta"));
          node.appendChild(el("div", "status"));
          node.addEventListener("click", () => select(agent.id));
          column.appendChild(node);
          state.nodes.set(agent.id, node);
        }
        node.title = agent.title || agent.id;
        node.querySelector(".meta").textContent = agent.model + " · " + agent.backend;
        node.dataset.critical = agent.critical ? "true" : "false";
        node.dataset.deps = JSON.stringify(agent.depends_on || []);
        setStatus(agent.id, agent.status, agent);
      }
    }
    for (const [id, node] of state.nodes) if (!seen.has(id)) { node.remove(); state.nodes.delete(id); }
    const live = run.live || {};
    state.elapsedBase = live.elapsed_s;
    state.elapsedAt = Date.now();
    byId("cost").textContent = usd(live.cost_usd);
    byId("eta").textContent = live.finished ? "done" : (live.eta_s === null ? "estimating" : secs(live.eta_s));
    const counts = live.counts || {};
    byId("counts").textContent = Object.keys(counts).map((k) => k + " " + counts[k]).join(" · ");
    tick();
    drawEdges();
    if (state.selected) {
      const node = state.nodes.get(state.selected);
      const key = node ? node.dataset.status : "";
      if (key !== state.detailStatus || !["completed", "failed", "skipped", "reused"].includes(key)) loadDetail(state.selected);
    }
  }

  function setStatus(id, status, agent) {
    const node = state.nodes.get(id);
    if (!node) return;
    node.dataset.status = status;
    let text = status;
    if (agent && agent.elapsed_s !== null && agent.elapsed_s !== undefined) text += " · " + secs(agent.elapsed_s);
    if (agent && agent.rate_limited_429) text += " · 429×" + agent.rate_limited_429;
    node.querySelector(".status").textContent = text;
  }

  function drawEdges() {
    const svg = byId("edges");
    const wrap = byId("dag-wrap").getBoundingClientRect();
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    svg.setAttribute("width", String(byId("dag-wrap").scrollWidth));
    svg.setAttribute("height", String(byId("dag-wrap").scrollHeight));
    for (const node of state.nodes.values()) {
      const to = node.getBoundingClientRect();
      let deps = [];
      try { deps = JSON.parse(node.dataset.deps || "[]"); } catch (e) { deps = []; }
      for (const dep of deps) {
        const from = state.nodes.get(dep);
        if (!from) continue;
        const a = from.getBoundingClientRect();
        const x1 = a.right - wrap.left, y1 = a.top + a.height / 2 - wrap.top;
        const x2 = to.left - wrap.left, y2 = to.top + to.height / 2 - wrap.top;
        const bend = Math.max(20, (x2 - x1) / 2);
        const line = document.createElementNS("http://www.w3.org/2000/svg", "path");
        line.setAttribute("d", "M" + x1 + " " + y1 + " C" + (x1 + bend) + " " + y1 + " " + (x2 - bend) + " " + y2 + " " + x2 + " " + y2);
        const path = (state.run && state.run.live && state.run.live.critical_path) || [];
        const at = path.indexOf(dep);
        if (at >= 0 && path[at + 1] === node.dataset.agent) line.setAttribute("class", "critical");
        svg.appendChild(line);
      }
    }
  }

  function tick() {
    const live = (state.run && state.run.live) || {};
    let value = state.elapsedBase;
    if (value !== null && value !== undefined && !live.finished && !state.ended) {
      value += (Date.now() - state.elapsedAt) / 1000;
    }
    byId("elapsed").textContent = secs(value);
  }

  // ------------------------------------------------------------------ one agent

  function field(list, name, value) {
    list.appendChild(el("dt", "", name));
    list.appendChild(el("dd", "", value === null || value === undefined || value === "" ? "–" : value));
  }

  function section(parent, name, text, id) {
    if (text === null || text === undefined || text === "") return;
    parent.appendChild(el("h4", "", name));
    const pre = el("pre", "", text);
    if (id) pre.id = id;
    parent.appendChild(pre);
  }

  function select(id) {
    state.selected = id;
    for (const [other, node] of state.nodes) node.classList.toggle("selected", other === id);
    byId("detail").hidden = false;
    byId("detail-title").textContent = id;
    drawEdges();
    loadDetail(id);
  }

  async function loadDetail(id) {
    let a;
    try { a = await getJson("/api/agent", "&id=" + encodeURIComponent(id)); } catch (e) { return; }
    if (state.selected !== id) return;
    state.detailStatus = a.status;
    const rec = a.record || {};
    const list = byId("detail-fields");
    while (list.firstChild) list.removeChild(list.firstChild);
    field(list, "status", a.status + (a.note ? " — " + a.note : ""));
    field(list, "title", a.title);
    field(list, "model", a.model + " (" + a.backend + ")");
    field(list, "started", rec.started_at);
    field(list, "finished", rec.finished_at);
    field(list, "time", secs(a.elapsed_s));
    field(list, "attempts", a.attempts);
    field(list, "retries", a.retries);
    field(list, "429s", a.rate_limited_429);
    field(list, "throttled", secs(a.throttled_s));
    field(list, "tokens", (a.tokens || 0).toLocaleString() + (a.tokens_estimated ? " (estimated)" : ""));
    field(list, "cost", usd(a.cost_usd));
    field(list, "on critical path", a.critical ? "yes" : "no");
    if (rec.task_id) field(list, "Task", rec.task_id + (a.polls ? " (" + a.polls + " polls)" : ""));
    if (a.error) field(list, "error", a.error);
    const sections = byId("detail-sections");
    while (sections.firstChild) sections.removeChild(sections.firstChild);
    section(sections, "Output", rec.output_text, "detail-output");
    section(sections, "Diff", rec.diff, "detail-diff");
    section(sections, "Worklog", Array.isArray(rec.worklog) ? rec.worklog.join("\n") : null, "detail-worklog");
    section(sections, "Prompt", a.prompt, "detail-prompt");
    section(sections, "System instruction", a.system, "detail-system");
    if (!sections.firstChild) sections.appendChild(el("p", "dim", "Nothing yet: the agent has not finished."));
  }

  // ------------------------------------------------------------------ live updates

  function refreshSoon() {
    if (state.timer) return;
    state.timer = setTimeout(async () => {
      state.timer = null;
      try { renderRun(await getJson("/api/run")); } catch (e) { /* the next event retries */ }
    }, 250);
  }

  function logEvent(event) {
    const log = byId("log");
    const time = String(event.at || "").slice(11, 19);
    const who = event.agent_id ? event.agent_id + " " : (event.phase ? "phase " + event.phase + " " : "");
    const item = el("li", "", time + " " + who + String(event.kind || "").replace("agent_", "").replace("_", " ")
      + (event.message ? ": " + event.message : ""));
    log.insertBefore(item, log.firstChild);
    while (log.childNodes.length > 200) log.removeChild(log.lastChild);
  }

  function connect() {
    const source = new EventSource(q("/api/events"));
    const badge = byId("connection");
    source.onopen = () => { badge.textContent = "live"; badge.className = "badge live"; };
    source.onmessage = (message) => {
      let event;
      try { event = JSON.parse(message.data); } catch (e) { return; }
      logEvent(event);
      if (event.kind === "run_started") state.ended = false;
      const status = KIND_STATUS[event.kind];
      if (status && event.agent_id) setStatus(event.agent_id, status, null);
      refreshSoon();
    };
    source.addEventListener("end", () => {
      source.close();
      state.ended = true;
      badge.textContent = "run finished";
      badge.className = "badge ended";
      refreshSoon();
    });
    source.onerror = () => { if (!state.ended) { badge.textContent = "reconnecting"; badge.className = "badge"; } };
  }

  window.addEventListener("resize", drawEdges);
  document.addEventListener("DOMContentLoaded", async () => {
    byId("detail-close").addEventListener("click", () => {
      state.selected = null;
      byId("detail").hidden = true;
      for (const node of state.nodes.values()) node.classList.remove("selected");
      drawEdges();
    });
    try { renderRun(await getJson("/api/run")); } catch (e) { byId("project").textContent = String(e); }
    connect();
    setInterval(tick, 1000);
    // Elapsed times of running agents and the ETA move between events.
    setInterval(() => { if (!state.ended) refreshSoon(); }, 2000);
  });
})();
