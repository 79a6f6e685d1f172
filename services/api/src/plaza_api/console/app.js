// The console: sign in, a queue (or a worker's assignments), and a request's page with the
// actions the API says the user may take. Routes live in the URL's hash (#/queue/06?status=new,
// #/request/12), never the credential. Everything a citizen wrote goes in as text (dom.js).

import { ApiError, call, credential, onUnauthorized, query } from "./api.js";
import { announce, append, h, replace, safeUrl } from "./dom.js";

const PAGE = 50;
const REFRESH_SECONDS = 30;
const STATUSES = [
  "new", "acknowledged", "assigned", "in_progress", "transferred", "reopened",
  "resolved", "closed", "duplicate", "not_responsible",
];
const FILTERS = ["status", "service_code", "urgency", "overdue", "escalated", "assigned_worker", "sort"];
const WAITING = new Set(["new", "transferred", "reopened"]); // nobody has acknowledged it yet
const OPEN = new Set([...WAITING, "acknowledged", "assigned", "in_progress"]);
// What each action asks for (README "The life of a request"); the API checks it and says why not.
const ACTION_FORMS = {
  acknowledge: { label: "Acknowledge", fields: [] },
  assign: { label: "Assign a worker", fields: ["worker"] },
  start: { label: "Start work", fields: [] },
  resolve: { label: "Resolve", fields: ["note", "photo_url"] },
  close: { label: "Close", fields: [] },
  reopen: { label: "Reopen", fields: ["note"] },
  transfer: { label: "Transfer", fields: ["note", "district_code", "agency"] },
  mark_duplicate: { label: "Mark as duplicate", fields: ["duplicate_of"] },
  not_responsible: { label: "Not the city's responsibility", fields: ["note"] },
};
const FIELD_LABELS = {
  worker: "Worker's public handle (e.g. @jordi)",
  note: "Note (public: the citizen sees it)",
  photo_url: "Photo of the fix (public https URL)",
  district_code: "To district",
  agency: "Or to team (agency)",
  duplicate_of: "Duplicate of request number",
};

const state = {
  me: null,
  city: { name: "", time_zone: "Europe/Madrid", queues: [], districts: {}, barris: {} },
  services: {},
  queue: null, // {code, filters, items, next, loadedAt}
  timer: null,
  requestId: null,
};
let uid = 0;
const nextId = (stem) => `${stem}-${++uid}`;

const main = () => document.getElementById("main");

// --- start, sign in, sign out ---------------------------------------------------------------

onUnauthorized((error) => {
  const wasIn = state.me !== null;
  credential.clear();
  state.me = null;
  showSignIn(wasIn ? `Your session has ended (${error.detail}). Sign in again.` : `Not signed in: ${error.detail}.`);
});

async function start() {
  document.getElementById("sign-out").addEventListener("click", signOut);
  // only the console's own routes (#/...): the skip link's #main moves the focus, nothing else
  window.addEventListener("hashchange", () => location.hash.startsWith("#/") && route());
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && state.queue && currentView() === "queue") refreshQueue();
  });
  await loadCity();
  if (!credential.get()) {
    showSignIn();
    return;
  }
  try {
    await signedIn();
  } catch (error) {
    if (error.status !== 401) showFatal(error);
  }
}

async function loadCity() {
  try {
    const [city, services] = await Promise.all([
      call("city.json", { auth: false }),
      call("/open311/v2/services.json", { auth: false }),
    ]);
    state.city = city.data;
    for (const service of services.data) state.services[service.service_code] = service.service_name;
  } catch (error) {
    // the console still works with codes and UTC-free local times; say what is missing
    console.warn("the city's names could not be read", error);
  }
}

function showSignIn(message, kind = "error") {
  stopTimer();
  document.getElementById("session").hidden = true;
  const error = h("p", { class: kind, role: "alert", id: "sign-in-message" }, message || "");
  const userForm = h(
    "form",
    { method: "post", class: "card stack", "aria-labelledby": "sign-in-title", onsubmit: passwordSignIn },
    h("h1", { id: "sign-in-title", tabindex: "-1" }, "Sign in"),
    h("p", { class: "muted" }, `District managers, workers and city hall of ${state.city.name || "the city"}.`),
    field("Username", h("input", { name: "username", autocomplete: "username", required: true, autocapitalize: "none", spellcheck: "false" })),
    field("Password", h("input", { name: "password", type: "password", autocomplete: "current-password", required: true })),
    h("button", { type: "submit", class: "primary" }, "Sign in"),
    h(
      "details",
      {},
      h("summary", {}, "Use an API key instead"),
      h(
        "div",
        { class: "stack" },
        field("API key (plz_…)", h("input", { name: "key", type: "password", autocomplete: "off", spellcheck: "false" })),
        h("button", { type: "button", onclick: keySignIn }, "Sign in with the key"),
      ),
    ),
    error,
  );
  replace(main(), h("section", { class: "sign-in" }, userForm));
  userForm.querySelector(message ? "h1" : "input").focus();
}

async function passwordSignIn(event) {
  event.preventDefault();
  const form = event.currentTarget;
  const error = form.querySelector("#sign-in-message");
  error.textContent = "";
  const data = new FormData(form);
  await busy(form, async () => {
    try {
      const { data: token } = await call("/api/v1/auth/token", {
        method: "POST",
        auth: false,
        form: { username: data.get("username"), password: data.get("password") },
      });
      credential.set(token.access_token);
      await signedIn();
    } catch (failure) {
      error.textContent = failure.detail || String(failure);
    }
  });
}

async function keySignIn(event) {
  const form = event.currentTarget.form;
  const error = form.querySelector("#sign-in-message");
  error.textContent = "";
  const key = form.elements.key.value.trim();
  if (!key) {
    error.textContent = "Paste an API key first.";
    return;
  }
  credential.set(key);
  await busy(form, async () => {
    try {
      await signedIn();
    } catch (failure) {
      // a 401 already brought the sign-in back, saying why
      if (failure.status !== 401) error.textContent = failure.detail || String(failure);
    }
  });
}

async function signedIn() {
  const { data: me } = await call("/api/v1/me");
  if (!["worker", "manager", "city_hall", "admin"].includes(me.role)) {
    credential.clear();
    throw new ApiError(403, {
      detail: `the console is for staff (workers, managers, city hall); this key's role is ${me.role}`,
    });
  }
  state.me = me;
  const who = document.getElementById("who");
  replace(who, h("strong", {}, me.name), ` · ${roleLabel(me)}`);
  document.getElementById("session").hidden = false;
  document.getElementById("nav-replies").hidden = me.role === "worker"; // /replies is not theirs
  announce(`Signed in as ${me.name}`);
  route();
}

function signOut() {
  credential.clear();
  state.me = null;
  state.queue = null;
  history.replaceState(null, "", "#/");
  showSignIn("You have signed out.", "info");
}

function roleLabel(me) {
  if (me.role === "worker") return `worker ${me.worker_handle}`;
  if (me.role === "manager") return `manager of ${me.scopes.map(queueName).join(", ")}`;
  return me.role === "city_hall" ? "city hall" : "admin";
}

// --- routes ---------------------------------------------------------------------------------

function currentView() {
  if (location.hash.startsWith("#/request/")) return "request";
  return location.hash.startsWith("#/replies") ? "replies" : "queue";
}

function route() {
  if (!state.me) return;
  const hash = location.hash.startsWith("#/") ? location.hash : "#/";
  const request = /^#\/request\/(\d+)$/.exec(hash);
  if (request) {
    stopTimer();
    showRequest(request[1]);
    return;
  }
  if (hash.startsWith("#/replies") && state.me.role !== "worker") {
    stopTimer();
    showReplies(new URLSearchParams(hash.split("?")[1] || "").get("state") ?? "failed");
    return;
  }
  if (state.me.role === "worker") {
    showQueue("assignments", {});
    return;
  }
  const [path, search] = hash.split("?");
  let code = "";
  try {
    code = decodeURIComponent(path.replace(/^#\/queue\/?/, "").replace(/^#\/?/, ""));
  } catch {
    // a mangled address: the first queue
  }
  const given = new URLSearchParams(search || "");
  const filters = Object.fromEntries(FILTERS.filter((name) => given.get(name)).map((name) => [name, given.get(name)]));
  showQueue(code || myQueues()[0]?.code, filters);
}

function myQueues() {
  const me = state.me;
  if (me.role === "manager") return me.scopes.map((code) => ({ code, name: queueName(code) }));
  return state.city.queues;
}

function queueName(code) {
  return state.city.queues.find((q) => q.code === code)?.name || code;
}

function serviceName(code) {
  return state.services[code] || code;
}

// --- the queue ------------------------------------------------------------------------------

async function showQueue(code, filters) {
  const same = state.queue && state.queue.code === code && sameFilters(state.queue.filters, filters);
  if (!same) state.queue = { code, filters, items: [], next: null, loadedAt: null, selected: new Set() };
  const q = state.queue;
  const title = code === "assignments" ? "Your assignments" : `Queue: ${queueName(code)}`;
  const list = h("ol", { class: "items", id: "queue-items", "aria-live": "off" });
  const more = h("button", { type: "button", id: "load-more", hidden: true, onclick: loadMore }, "Load more");
  const meta = h("p", { class: "muted", id: "queue-meta" });
  const error = h("p", { class: "error", role: "alert", id: "queue-error" });
  const refresh = h("button", { type: "button", id: "refresh", onclick: () => refreshQueue(true) }, "Refresh");
  replace(
    main(),
    h(
      "section",
      { "aria-labelledby": "queue-title", class: "queue" },
      h("div", { class: "heading" }, h("h1", { id: "queue-title", tabindex: "-1" }, title), refresh),
      code === "assignments" ? null : filterBox(code, filters),
      meta,
      code === "assignments" ? null : bulkForm(),
      error,
      list,
      more,
    ),
  );
  document.title = `${title} · Plaza`;
  if (same && q.items.length) {
    renderItems();
    refreshQueue();
  } else {
    list.append(h("li", { class: "loading" }, "Loading…"));
    await loadPage(false);
  }
  startTimer();
}

function sameFilters(a, b) {
  return JSON.stringify(Object.entries(a).sort()) === JSON.stringify(Object.entries(b).sort());
}

/** The filters, folded away on a phone's screen unless some are in force. */
function filterBox(code, filters) {
  const active = Object.values(filters).some(Boolean);
  const wide = window.matchMedia("(min-width: 40rem)").matches;
  return h(
    "details",
    { class: "filter-box", open: active || wide },
    h("summary", {}, active ? "Filters (some in force)" : "Filters and other queues"),
    filterForm(code, filters),
  );
}

function filterForm(code, filters) {
  const selected = new Set((filters.status || "").split(",").filter(Boolean));
  const queues = myQueues();
  const serviceOptions = Object.entries(state.services).sort((a, b) => a[1].localeCompare(b[1]));
  const choose = (name, label, options, value) =>
    field(
      label,
      h(
        "select",
        { name },
        options.map(([v, text]) => h("option", { value: v, selected: v === (value || "") }, text)),
      ),
    );
  return h(
    "form",
    { class: "filters", method: "post", "aria-label": "Filters", onsubmit: applyFilters },
    choose("queue", "Queue", queues.map((q) => [q.code, q.name]), code),
    h(
      "fieldset",
      { class: "statuses" },
      h("legend", {}, "Status (none ticked: every open one)"),
      STATUSES.map((s) =>
        h("label", { class: "check" }, h("input", { type: "checkbox", name: "status", value: s, checked: selected.has(s) }), ` ${s.replace("_", " ")}`),
      ),
    ),
    choose("service_code", "Service", [["", "Any service"], ...serviceOptions], filters.service_code),
    choose("urgency", "Urgency", [["", "Any"], ["urgent", "Urgent"], ["normal", "Normal"]], filters.urgency),
    choose("overdue", "Overdue", [["", "Any"], ["true", "Overdue only"], ["false", "Not overdue"]], filters.overdue),
    choose("escalated", "Escalated", [["", "Any"], ["true", "Escalated only"], ["false", "Not escalated"]], filters.escalated),
    field("Assigned worker", h("input", { name: "assigned_worker", value: filters.assigned_worker || "", placeholder: "@jordi", autocapitalize: "none", spellcheck: "false" })),
    choose("sort", "Order", [["", "Earliest due first"], ["-due", "Latest due first"]], filters.sort),
    h("div", { class: "actions-row" }, h("button", { type: "submit", class: "primary" }, "Apply filters")),
  );
}

function applyFilters(event) {
  event.preventDefault();
  const data = new FormData(event.currentTarget);
  const filters = {
    status: data.getAll("status").join(","),
    service_code: data.get("service_code"),
    urgency: data.get("urgency"),
    overdue: data.get("overdue"),
    escalated: data.get("escalated"),
    assigned_worker: String(data.get("assigned_worker") || "").trim(),
    sort: data.get("sort"),
  };
  location.hash = `#/queue/${encodeURIComponent(data.get("queue"))}${query(filters)}`;
}

function queuePath(q, limit, cursor) {
  if (q.code === "assignments") return `/api/v1/assignments${query({ limit: Math.min(limit, 500) })}`;
  return `/api/v1/districts/${encodeURIComponent(q.code)}/queue${query({ ...q.filters, limit, cursor })}`;
}

async function loadPage(append_) {
  const q = state.queue;
  const error = document.getElementById("queue-error");
  try {
    const { data } = await call(queuePath(q, PAGE, append_ ? q.next : undefined));
    if (state.queue !== q) return; // the user moved on meanwhile
    q.items = append_ ? [...q.items, ...data.items] : data.items;
    q.next = data.next_cursor || null;
    q.loadedAt = new Date();
    error.textContent = "";
    renderItems();
  } catch (failure) {
    if (failure.status === 401) return;
    error.textContent = failure.detail;
    if (!q.items.length) replace(document.getElementById("queue-items"));
  }
}

async function loadMore(event) {
  await busy(event.currentTarget, () => loadPage(true));
  const items = document.querySelectorAll("#queue-items > li a");
  announce(`${state.queue.items.length} requests shown`);
  items[Math.max(0, state.queue.items.length - 1)]?.focus({ preventScroll: true });
}

/** The queue again, as far as it was read (up to 500), keeping the page's scroll and focus. */
async function refreshQueue(asked = false) {
  const q = state.queue;
  if (!q || currentView() !== "queue" || !document.getElementById("queue-items")) return;
  const limit = Math.min(500, Math.max(PAGE, q.items.length));
  const focused = document.activeElement?.closest?.("#queue-items li")?.dataset.id;
  const error = document.getElementById("queue-error");
  try {
    const { data } = await call(queuePath(q, limit));
    if (state.queue !== q) return;
    q.items = data.items;
    q.next = data.next_cursor || null;
    q.loadedAt = new Date();
    error.textContent = "";
    const scroll = window.scrollY;
    renderItems();
    window.scrollTo(0, scroll);
    if (focused) document.querySelector(`#queue-items li[data-id="${CSS.escape(focused)}"] a`)?.focus({ preventScroll: true });
    if (asked) announce("Queue refreshed");
  } catch (failure) {
    if (failure.status !== 401) error.textContent = failure.detail;
  }
}

function renderItems() {
  const q = state.queue;
  const list = document.getElementById("queue-items");
  if (!list) return;
  if (!q.items.length) {
    replace(list, h("li", { class: "empty" }, q.code === "assignments" ? "Nothing is assigned to you. Well done." : "No request matches: the queue is clear."));
  } else {
    replace(list, q.items.map(queueItem));
  }
  const more = document.getElementById("load-more");
  more.hidden = !q.next;
  countSelected();
  replace(
    document.getElementById("queue-meta"),
    `${q.items.length} request${q.items.length === 1 ? "" : "s"} shown${q.next ? " (more below)" : ""} · updated `,
    h("time", { datetime: q.loadedAt.toISOString() }, clock(q.loadedAt)),
    ` · refreshes every ${REFRESH_SECONDS} s · times in ${state.city.time_zone}`,
  );
}

function queueItem(item) {
  const flags = flagsOf(item);
  const id = item.service_request_id;
  const q = state.queue;
  const pick =
    q.code === "assignments"
      ? null
      : h("input", {
          type: "checkbox",
          class: "pick",
          "aria-label": `Select request #${id}`,
          checked: q.selected.has(id),
          onchange: (event) => {
            if (event.currentTarget.checked) q.selected.add(id);
            else q.selected.delete(id);
            countSelected();
          },
        });
  return h(
    "li",
    { class: `item${flags.length ? " flagged" : ""}`, "data-id": id },
    pick,
    h(
      "a",
      { href: `#/request/${item.service_request_id}` },
      h("span", { class: "id" }, `#${item.service_request_id}`),
      " ",
      h("strong", {}, serviceName(item.service_code)),
    ),
    h("p", { class: "desc" }, clip(item.description, 240)),
    h("p", { class: "tags" }, statusTag(item.status), item.urgency === "urgent" ? h("span", { class: "tag urgent" }, "urgent") : null, flags.map(flagTag)),
    h(
      "dl",
      { class: "due" },
      h("dt", {}, "Acknowledge by"),
      h("dd", {}, when(item.ack_due_at)),
      h("dt", {}, "Resolve by"),
      h("dd", {}, when(item.expected_datetime)),
    ),
    h(
      "p",
      { class: "muted small" },
      [
        placeName(item),
        item.assigned_worker ? `worker ${item.assigned_worker}` : null,
        item.reporters_count > 1 ? `${item.reporters_count} neighbours` : null,
        `by ${item.author_handle}`,
      ].filter(Boolean).join(" · "),
    ),
  );
}

/** The same action on the selected requests (up to 100), each refused one with its reason. */
function bulkForm() {
  const result = h("p", { id: "bulk-result", role: "status" });
  const workerId = nextId("bulk-worker");
  const send = (action, body) => async (event) => {
    const q = state.queue;
    const form = event.currentTarget.form;
    result.textContent = "";
    result.className = "";
    const ids = [...q.selected].slice(0, 100).map(Number);
    if (!ids.length) {
      result.className = "error";
      result.textContent = "Select requests first (the box by each one).";
      return;
    }
    await busy(form, async () => {
      try {
        const { data } = await call(`/api/v1/requests/actions/${action}`, { method: "POST", body: { ...body(form), service_request_ids: ids } });
        const refused = data.results.filter((r) => r.status !== 200);
        result.className = refused.length ? "error" : "info";
        append(result, [`${data.succeeded} done, ${data.failed} refused.`, refused.map((r) => ` #${r.service_request_id}: ${r.detail} (${r.status}).`)]);
        q.selected.clear();
        await refreshQueue();
        countSelected();
      } catch (failure) {
        if (failure.status === 401) return;
        result.className = "error";
        result.textContent = `${failure.detail} (${failure.status})`;
      }
    });
  };
  return h(
    "form",
    { class: "bulk", id: "bulk", method: "post", "aria-label": "Act on the selected requests", onsubmit: (event) => event.preventDefault() },
    h("p", { id: "bulk-count", class: "muted" }, "None selected"),
    h("button", { type: "button", onclick: send("acknowledge", () => ({})) }, "Acknowledge selected"),
    h("label", { for: workerId }, "Worker"),
    h("input", { id: workerId, name: "worker", placeholder: "@jordi", autocapitalize: "none", spellcheck: "false" }),
    h("button", { type: "button", onclick: send("assign", (form) => ({ worker: form.elements.worker.value.trim() })) }, "Assign selected"),
    result,
  );
}

function countSelected() {
  const count = document.getElementById("bulk-count");
  const n = state.queue?.selected.size || 0;
  if (count) count.textContent = n ? `${n} selected${n > 100 ? " (the first 100 are sent)" : ""}` : "None selected";
}

/** What is late about a request: its acknowledge-by time passed with nobody acknowledging it,
 * its resolve-by time passed, it was escalated to city hall. */
function flagsOf(item) {
  const now = Date.now();
  const flags = [];
  const open = OPEN.has(item.status);
  if (open && WAITING.has(item.status) && item.ack_due_at && Date.parse(item.ack_due_at) < now) flags.push(["ack-late", "Acknowledge late"]);
  if (open && item.expected_datetime && Date.parse(item.expected_datetime) < now) flags.push(["overdue", "Overdue"]);
  else if (item.overdue && !flags.length) flags.push(["overdue", "Overdue"]);
  if (item.escalated) flags.push(["escalated", "Escalated"]);
  return flags;
}

const flagTag = ([kind, text]) => h("span", { class: `tag flag ${kind}` }, text);
const statusTag = (status) => h("span", { class: `tag status s-${status}` }, status.replace("_", " "));

function placeName(item) {
  const barri = state.city.barris[item.barri_code || ""];
  const district = state.city.districts[item.district_code || ""];
  return [barri, district].filter(Boolean).join(", ") || (item.queue === "triage" ? "no district found" : item.district_code || "");
}

function startTimer() {
  stopTimer();
  state.timer = setInterval(() => {
    if (!document.hidden) refreshQueue();
  }, REFRESH_SECONDS * 1000);
}

function stopTimer() {
  if (state.timer) clearInterval(state.timer);
  state.timer = null;
}

// --- replies on their way ---------------------------------------------------------------------

/** The public replies' deliveries to the social platforms: those that failed for good wait for
 * a retry here. */
async function showReplies(which) {
  const list = h("ol", { class: "items", id: "delivery-items" }, h("li", { class: "loading" }, "Loading…"));
  const error = h("p", { class: "error", role: "alert", id: "replies-error" });
  const stateId = nextId("state");
  replace(
    main(),
    h(
      "section",
      { class: "deliveries", "aria-labelledby": "replies-title" },
      h("div", { class: "heading" }, h("h1", { id: "replies-title", tabindex: "-1" }, "Public replies on their way")),
      h(
        "form",
        { method: "post", class: "inline", onsubmit: (event) => event.preventDefault() },
        h("label", { for: stateId }, "Show"),
        h(
          "select",
          { id: stateId, onchange: (event) => { location.hash = `#/replies?state=${event.currentTarget.value}`; } },
          [["failed", "Failed (waiting for a retry)"], ["pending", "Pending"], ["sending", "Sending"], ["posted", "Posted"], ["", "All"]].map(([v, text]) => h("option", { value: v, selected: v === which }, text)),
        ),
      ),
      error,
      list,
    ),
  );
  document.title = "Replies · Plaza";
  try {
    const { data } = await call(`/api/v1/replies${query({ state: which, limit: 200 })}`);
    replace(list, data.length ? data.map(delivery) : h("li", { class: "empty" }, which === "failed" ? "No reply failed: every one went out or is on its way." : "None."));
  } catch (failure) {
    if (failure.status === 401) return;
    replace(list);
    error.textContent = failure.detail;
  }
}

function delivery(d) {
  const error = h("p", { class: "error", role: "alert" });
  const status = h("span", { class: `tag status s-${d.state}` }, d.state);
  const retry =
    d.state === "failed"
      ? h("form", {
          method: "post",
          class: "inline",
          onsubmit: (event) =>
            submit(event, error, () => call(`/api/v1/replies/${encodeURIComponent(d.reply_id)}/retry`, { method: "POST" }), (result) => {
              status.textContent = result.data.state;
              event.target.remove();
              announce("The reply will be sent again");
            }),
        }, h("button", { type: "submit" }, "Retry"), error)
      : null;
  return h(
    "li",
    { class: "item", "data-reply": d.reply_id },
    h("h2", {}, d.service_request_id ? h("a", { href: `#/request/${d.service_request_id}` }, `Request #${d.service_request_id}`) : "No request", ` · ${d.platform} · ${d.kind}`),
    h("p", { class: "tags" }, status, h("span", { class: "tag" }, `${d.attempts} attempt${d.attempts === 1 ? "" : "s"}`)),
    h("p", { class: "text" }, d.text),
    d.last_error ? h("p", { class: "small" }, `Last error: ${d.last_error}`) : null,
    d.public_url ? h("p", { class: "small" }, externalLink(d.public_url, "The reply on its platform")) : null,
    h("p", { class: "muted small" }, "Updated ", when(d.updated_at)),
    retry,
  );
}

// --- a request --------------------------------------------------------------------------------

async function showRequest(id, notice) {
  state.requestId = id;
  const back = state.queue ? `#/queue/${encodeURIComponent(state.queue.code)}${query(state.queue.filters)}` : "#/";
  const page = h("article", { class: "request", "aria-labelledby": "request-title" }, h("p", { class: "loading" }, `Loading request #${id}…`));
  replace(
    main(),
    h("nav", { class: "crumbs", "aria-label": "Back" }, h("a", { href: state.me.role === "worker" ? "#/" : back }, "← Back to the queue")),
    page,
  );
  try {
    const [{ data, etag }, { data: events }] = await Promise.all([
      call(`/api/v1/requests/${id}`),
      call(`/api/v1/requests/${id}/history`),
    ]);
    if (state.requestId !== id || currentView() !== "request") return;
    renderRequest(page, data, etag, events, notice);
  } catch (failure) {
    if (failure.status === 401) return;
    replace(page, h("h1", { id: "request-title", tabindex: "-1" }, `Request #${id}`), h("p", { class: "error", role: "alert" }, failure.detail));
    page.querySelector("h1").focus();
  }
}

function renderRequest(page, r, etag, events, notice) {
  document.title = `#${r.service_request_id} ${serviceName(r.service_code)} · Plaza`;
  const flags = flagsOf(r);
  replace(
    page,
    h(
      "header",
      { class: "heading" },
      h("h1", { id: "request-title", tabindex: "-1" }, `#${r.service_request_id} ${serviceName(r.service_code)}`),
      h("button", { type: "button", id: "reload", onclick: () => showRequest(r.service_request_id) }, "Refresh"),
    ),
    h("p", { class: "tags" }, statusTag(r.status), r.urgency === "urgent" ? h("span", { class: "tag urgent" }, "urgent") : null, flags.map(flagTag)),
    notice ? h("div", { class: "notice", role: "alert", id: "conflict" }, notice) : null,
    // what the citizen said and what can be done first: on a phone the rest is a scroll away
    section(`Citizen posts (${r.reports.length})`, reports(r)),
    r.media_urls.length ? section("Photos", photos(r.media_urls)) : null,
    section("Actions", actions(r, etag)),
    section("Location", location_(r)),
    section("Summary", facts(r)),
    section(`Public replies (${r.replies.length})`, replies(r)),
    section("Notes", notes(r)),
    section("History", historyList(events)),
  );
  page.querySelector("h1").focus(); // the notice, a role=alert, is read out as well
}

function section(title, ...content) {
  const id = nextId("s");
  return h("section", { "aria-labelledby": id }, h("h2", { id }, title), content);
}

function facts(r) {
  const rows = [
    ["Status", `${r.status.replace("_", " ")} (Open311: ${r.open311_status}, ${r.extended_status})`],
    ["Queue", queueName(r.queue)],
    ["Team", r.agency_responsible],
    ["Urgency", r.urgency],
    ["Language", r.language],
    ["Neighbours who reported it", String(r.reporters_count)],
    ["Assigned worker", r.assigned_worker || "nobody yet"],
    ["Reported", when(r.requested_datetime)],
    ["Acknowledge by", when(r.ack_due_at)],
    ["Resolve by", when(r.expected_datetime)],
    ["Escalated to city hall", r.escalated ? "yes" : "no"],
    ["Status notes", r.status_notes],
    ["Duplicate of", r.duplicate_of ? h("a", { href: `#/request/${r.duplicate_of}` }, `#${r.duplicate_of}`) : null],
    ["Photo of the fix", r.resolution_photo_url ? externalLink(r.resolution_photo_url) : null],
    ["Version", String(r.version)],
  ];
  return dl(rows);
}

function dl(rows) {
  return h("dl", { class: "facts" }, rows.filter(([, v]) => v !== null && v !== undefined && v !== "").map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
}

function location_(r) {
  return dl([
    ["Barri", state.city.barris[r.barri_code || ""] ? `${state.city.barris[r.barri_code]} (${r.barri_code})` : r.barri_code],
    ["District", state.city.districts[r.district_code || ""] ? `${state.city.districts[r.district_code]} (${r.district_code})` : r.district_code || "none found"],
    ["Coordinates", r.lat !== null && r.long !== null ? `${r.lat.toFixed(5)}, ${r.long.toFixed(5)}` : "none given"],
    ["Address given", r.address],
    ["How it was placed", r.location_source],
  ]);
}

function reports(r) {
  const mayManage = state.me.role !== "worker";
  return h(
    "ol",
    { class: "thread" },
    r.reports.map((p) =>
      h(
        "li",
        { class: "post citizen" },
        h("p", { class: "byline" }, h("strong", {}, p.author_handle), ` on ${p.platform} · `, when(p.reported_at), p.merged ? h("span", { class: "tag" }, "merged") : null),
        h("p", { class: "text" }, p.text),
        p.contact ? h("p", { class: "muted small" }, `Private contact: ${[p.contact.first_name, p.contact.last_name, p.contact.email, p.contact.phone].filter(Boolean).join(" · ")}`) : null,
        mayManage && p.merged ? splitForm(r, p) : null,
      ),
    ),
    r.source_public_url ? h("li", { class: "muted small" }, externalLink(r.source_public_url, "The first post on its platform")) : null,
  );
}

function splitForm(r, p) {
  const error = h("p", { class: "error", role: "alert" });
  return h(
    "form",
    {
      method: "post",
      class: "inline",
      onsubmit: (event) =>
        submit(event, error, () =>
          call(`/api/v1/requests/${r.service_request_id}/split`, { method: "POST", body: { platform: p.platform, post_id: p.post_id } }),
          (result) => {
            announce(`Split into request #${result.data.service_request_id}`);
            location.hash = `#/request/${result.data.service_request_id}`;
          }),
    },
    h("button", { type: "submit" }, "Split into its own request"),
    error,
  );
}

function photos(urls) {
  return h(
    "ul",
    { class: "photos" },
    urls.map((url, i) => {
      if (!safeUrl(url) || url.startsWith("#")) return h("li", {}, `Photo ${i + 1} is not a web address: ${url}`);
      const holder = h("div", { class: "photo" });
      // Loaded only when asked: opening a request tells no photo host that a manager read it.
      const show = h("button", {
        type: "button",
        onclick: () => {
          replace(holder, h("img", { src: url, alt: `Photo ${i + 1} from the citizen`, referrerpolicy: "no-referrer", loading: "lazy" }));
          show.remove();
        },
      }, `Show photo ${i + 1}`);
      return h("li", {}, externalLink(url, `Photo ${i + 1}`), " ", show, holder);
    }),
  );
}

function replies(r) {
  if (!r.replies.length) return h("p", { class: "empty" }, "The city has not answered in public yet.");
  return h(
    "ol",
    { class: "thread" },
    r.replies.map((reply) =>
      h(
        "li",
        { class: "post city" },
        h("p", { class: "byline" }, h("strong", {}, "The city"), ` on ${reply.platform} (${reply.kind}, ${reply.language}) · `, reply.posted_at ? when(reply.posted_at) : "not posted yet"),
        h("p", { class: "text" }, reply.text),
      ),
    ),
  );
}

function notes(r) {
  const list = r.notes.length
    ? h("ol", { class: "thread" }, r.notes.map((n) => h("li", { class: `post note${n.public ? " public" : ""}` }, h("p", { class: "byline" }, h("strong", {}, n.actor), ` · ${n.kind} · ${n.public ? "public" : "internal"} · `, when(n.at)), h("p", { class: "text" }, n.note))))
    : h("p", { class: "empty" }, "No notes yet.");
  const error = h("p", { class: "error", role: "alert" });
  const textId = nextId("note");
  const publicId = nextId("public");
  const form = h(
    "form",
    {
      method: "post",
      class: "stack",
      id: "note-form",
      onsubmit: (event) => {
        const data = new FormData(event.currentTarget);
        return submit(event, error, () =>
          call(`/api/v1/requests/${r.service_request_id}/notes`, { method: "POST", body: { note: data.get("note"), public: data.get("public") === "on" } }),
          () => {
            announce("Note added");
            showRequest(r.service_request_id);
          });
      },
    },
    h("label", { for: textId }, "Add a note"),
    h("textarea", { id: textId, name: "note", rows: 3, required: true, maxlength: 2000 }),
    h("label", { class: "check", for: publicId }, h("input", { id: publicId, type: "checkbox", name: "public" }), " Public (Open311 shows it; internal otherwise)"),
    h("button", { type: "submit" }, "Add note"),
    error,
  );
  return [list, form];
}

function actions(r, etag) {
  if (!r.allowed_actions.length) return h("p", { class: "empty" }, "No action is open to you on this request now.");
  return h("div", { class: "action-list" }, r.allowed_actions.map((action) => actionForm(r, etag, action)));
}

function actionForm(r, etag, action) {
  const spec = ACTION_FORMS[action] || { label: action.replace("_", " "), fields: ["note"] };
  const error = h("p", { class: "error", role: "alert" });
  const inputs = spec.fields.map((name) => {
    const id = nextId(name);
    let input;
    if (name === "note") input = h("textarea", { id, name, rows: 2, maxlength: 2000 });
    else if (name === "district_code") {
      input = h("select", { id, name }, h("option", { value: "" }, "(the same district)"), Object.entries(state.city.districts).map(([code, dname]) => h("option", { value: code }, `${code} ${dname}`)));
    } else if (name === "duplicate_of") input = h("input", { id, name, type: "number", min: 1, inputmode: "numeric", required: true });
    else if (name === "photo_url") input = h("input", { id, name, type: "url", placeholder: "https://…" });
    else input = h("input", { id, name, required: name === "worker", autocapitalize: "none", spellcheck: "false" });
    return h("div", { class: "field" }, h("label", { for: id }, FIELD_LABELS[name] || name), input);
  });
  return h(
    "form",
    {
      method: "post",
      class: `action card stack action-${action}`,
      "data-action": action,
      onsubmit: (event) => {
        const data = new FormData(event.currentTarget);
        const body = {};
        for (const name of spec.fields) {
          const value = String(data.get(name) || "").trim();
          if (!value) continue;
          body[name] = name === "duplicate_of" ? Number(value) : value;
        }
        return submit(event, error, () =>
          call(`/api/v1/requests/${r.service_request_id}/actions/${action}`, { method: "POST", body, ifMatch: etag }),
          (result) => {
            announce(`${spec.label}: done; the request is ${result.data.status.replace("_", " ")}`);
            showRequest(r.service_request_id);
          },
          (failure) => {
            if (failure.status !== 412) return false;
            showRequest(r.service_request_id, `Someone else changed this request while you were reading it: ${failure.detail}. This is how it is now; decide again.`);
            return true;
          });
      },
    },
    spec.fields.length ? h("h3", {}, spec.label) : null,
    inputs,
    h("button", { type: "submit", class: "primary" }, spec.label),
    error,
  );
}

function historyList(events) {
  if (!events.length) return h("p", { class: "empty" }, "No history.");
  return h(
    "ol",
    { class: "history" },
    events.map((e) =>
      h(
        "li",
        {},
        h("p", { class: "byline" }, h("strong", {}, e.kind.replaceAll("_", " ")), ` by ${e.actor} · `, when(e.at), ` · v${e.version}`),
        changes(e),
        e.note ? h("p", { class: "text" }, `${e.public ? "Public" : "Internal"} note: `, e.note) : null,
      ),
    ),
  );
}

function changes(e) {
  const keys = Object.keys(e.after || {}).filter((k) => JSON.stringify(e.before?.[k]) !== JSON.stringify(e.after[k]));
  if (!keys.length) return null;
  return h("ul", { class: "changes small" }, keys.map((k) => h("li", {}, `${k}: ${show(e.before?.[k])} → ${show(e.after[k])}`)));
}

const ISO_TIME = /^\d{4}-\d\d-\d\dT\d\d:\d\d/;

function show(value) {
  if (value === null || value === undefined) return "—";
  if (typeof value === "string" && ISO_TIME.test(value)) {
    return formatter({ day: "numeric", month: "short", hour: "2-digit", minute: "2-digit" }).format(new Date(value));
  }
  return typeof value === "object" ? JSON.stringify(value) : String(value);
}

// --- helpers --------------------------------------------------------------------------------

/** Sends a form's call: its button busy meanwhile, a problem's detail next to it. `onError`
 * may take a failure over (returning true). */
async function submit(event, errorEl, send, onDone, onError = () => false) {
  event.preventDefault();
  const form = event.currentTarget;
  errorEl.textContent = "";
  await busy(form, async () => {
    try {
      onDone(await send());
    } catch (failure) {
      if (failure.status === 401) return;
      if (onError(failure)) return;
      errorEl.textContent = failure.status ? `${failure.detail} (${failure.status})` : failure.detail;
      if (failure.problem?.allowed_actions) {
        errorEl.append(` Allowed now: ${failure.problem.allowed_actions.join(", ") || "none"}.`);
      }
    }
  });
}

async function busy(el, work) {
  const buttons = [...(el.matches("button") ? [el] : el.querySelectorAll("button"))];
  for (const b of buttons) b.disabled = true;
  el.setAttribute("aria-busy", "true");
  try {
    await work();
  } finally {
    for (const b of buttons) b.disabled = false;
    el.removeAttribute("aria-busy");
  }
}

function field(label, input) {
  const id = input.id || nextId(input.name || "f");
  input.id = id;
  return h("div", { class: "field" }, h("label", { for: id }, label), input);
}

function externalLink(url, text) {
  return h("a", { href: url, rel: "noopener noreferrer", target: "_blank" }, text || url);
}

function clip(text, length) {
  return text.length > length ? `${text.slice(0, length - 1)}…` : text;
}

function formatter(options) {
  try {
    return new Intl.DateTimeFormat("en-GB", { timeZone: state.city.time_zone, ...options });
  } catch {
    return new Intl.DateTimeFormat("en-GB", options);
  }
}

function clock(date) {
  return formatter({ hour: "2-digit", minute: "2-digit", second: "2-digit" }).format(date);
}

/** A due time as a <time>: the date in the city's time zone, and how far it is from now. */
function when(iso) {
  if (!iso) return "—";
  const date = new Date(iso);
  const text = formatter({ weekday: "short", day: "numeric", month: "short", hour: "2-digit", minute: "2-digit" }).format(date);
  return h("time", { datetime: iso, title: `${state.city.time_zone}` }, `${text} (${relative(date)})`);
}

function relative(date) {
  const minutes = Math.round((date.getTime() - Date.now()) / 60000);
  const size = Math.abs(minutes);
  const amount = size < 60 ? `${size} min` : size < 48 * 60 ? `${Math.round(size / 60)} h` : `${Math.round(size / 1440)} days`;
  return minutes >= 0 ? `in ${amount}` : `${amount} ago`;
}

function showFatal(error) {
  replace(main(), h("p", { class: "error", role: "alert" }, `The console could not start: ${error.detail || error}`));
}

start();
