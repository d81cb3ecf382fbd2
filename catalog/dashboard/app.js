// Marina dashboard: a single page on the REST API. Every user-supplied string
// reaches the page through textContent or attribute setters, never as HTML.
"use strict";

const app = document.getElementById("app");
const flash = document.getElementById("flash");
let token = sessionStorage.getItem("marina-token") || "";
let stream = null; // the environment page's event stream

// -- helpers ----------------------------------------------------------------

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function show(...nodes) {
  app.replaceChildren(...nodes);
}

function say(message) {
  flash.textContent = message;
  flash.hidden = !message;
}

class ApiError extends Error {
  constructor(status, payload) {
    super(payload && payload.message ? payload.message : `HTTP ${status}`);
    this.status = status;
    this.payload = payload || {};
  }
}

async function api(method, path, body) {
  const options = { method, headers: { Authorization: `Bearer ${token}` } };
  if (body !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  let reply;
  try {
    reply = await fetch(path, options);
  } catch (err) {
    throw new ApiError(0, { message: "The Marina API cannot be reached." });
  }
  const kind = reply.headers.get("Content-Type") || "";
  const payload = kind.includes("application/json") ? await reply.json() : await reply.blob();
  if (reply.status === 401) {
    logout("Your token was not accepted; log in again.");
    throw new ApiError(401, payload);
  }
  if (!reply.ok) throw new ApiError(reply.status, payload);
  return payload;
}

function safeUrl(text) {
  try {
    const url = new URL(text);
    return url.protocol === "http:" || url.protocol === "https:" ? url.href : null;
  } catch (err) {
    return null;
  }
}

function time(seconds) {
  return seconds ? new Date(seconds * 1000).toLocaleTimeString() : "";
}

function stateBadge(state) {
  return el("span", { class: `state ${state || ""}`, text: state || "unknown" });
}

// -- forms from JSON Schema -------------------------------------------------

function schemaForm(schema, { idPrefix, submitLabel, onSubmit, values }) {
  const props = (schema && schema.properties) || {};
  const required = new Set((schema && schema.required) || []);
  const form = el("form", { novalidate: true });
  const errors = {};
  const inputs = {};
  for (const [name, prop] of Object.entries(props)) {
    const id = `${idPrefix}-${name}`;
    const label = el("label", { for: id, class: required.has(name) ? "required" : null,
                                text: prop.title || name });
    let input;
    const initial = values && name in values ? values[name] : prop.default;
    if (Array.isArray(prop.enum)) {
      input = el("select", { id, name },
        prop.enum.map((choice) => el("option", { value: JSON.stringify(choice),
                                                  text: String(choice) })));
      if (initial !== undefined) input.value = JSON.stringify(initial);
    } else if (prop.type === "boolean") {
      input = el("input", { id, name, type: "checkbox" });
      input.checked = Boolean(initial);
    } else if (prop.type === "integer" || prop.type === "number") {
      input = el("input", { id, name, type: "number", step: prop.type === "integer" ? 1 : "any",
                            min: prop.minimum ?? null, max: prop.maximum ?? null });
      if (initial !== undefined) input.value = String(initial);
    } else if (prop.type === "object" || prop.type === "array") {
      input = el("textarea", { id, name, "aria-describedby": `${id}-help` });
      input.value = initial !== undefined ? JSON.stringify(initial, null, 2) : "";
    } else {
      input = el("input", { id, name, type: "text", maxlength: prop.maxLength ?? null,
                            pattern: prop.pattern ?? null });
      if (initial !== undefined) input.value = String(initial);
    }
    if (required.has(name)) input.setAttribute("aria-required", "true");
    inputs[name] = { input, prop };
    errors[name] = el("div", { class: "field-error", id: `${id}-error`, role: "status" });
    input.setAttribute("aria-describedby", `${id}-error`);
    const help = prop.type === "object" || prop.type === "array"
      ? el("div", { class: "muted", id: `${id}-help`, text: "JSON" }) : null;
    form.append(el("div", { class: "field" }, label, input, help, errors[name]));
  }
  const general = el("div", { class: "field-error", role: "status" });
  form.append(general, el("button", { type: "submit", class: "primary", text: submitLabel }));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    for (const box of Object.values(errors)) box.textContent = "";
    general.textContent = "";
    const data = {};
    for (const [name, { input, prop }] of Object.entries(inputs)) {
      if (input.type === "checkbox") data[name] = input.checked;
      else if (input.tagName === "SELECT") data[name] = JSON.parse(input.value);
      else if (input.value.trim() === "") continue;
      else if (prop.type === "integer" || prop.type === "number") data[name] = Number(input.value);
      else if (prop.type === "object" || prop.type === "array") {
        try {
          data[name] = JSON.parse(input.value);
        } catch (err) {
          errors[name].textContent = "must be valid JSON";
          return;
        }
      } else data[name] = input.value;
    }
    try {
      await onSubmit(data);
    } catch (err) {
      if (!(err instanceof ApiError)) throw err;
      const problems = err.payload.problems || [];
      let placed = false;
      for (const problem of problems) {
        const key = String(problem.field).split(".").pop();
        if (errors[key]) {
          errors[key].textContent = problem.rule;
          placed = true;
        }
      }
      const rest = problems.filter((p) => !errors[String(p.field).split(".").pop()]);
      general.textContent = !placed || rest.length
        ? [err.message, ...rest.map((p) => `${p.field}: ${p.rule}`)].join(" — ") : "";
    }
  });
  return form;
}

// -- pages ------------------------------------------------------------------

function loginPage() {
  const input = el("input", { id: "token", name: "token", type: "password",
                              autocomplete: "current-password" });
  const error = el("div", { class: "field-error", role: "status" });
  const form = el("form", {},
    el("label", { for: "token", text: "Token" }), input, error,
    el("button", { type: "submit", class: "primary", text: "Log in" }));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    token = input.value.trim();
    try {
      await api("GET", "/v1/environments");
    } catch (err) {
      error.textContent = err.status === 401 ? "That token is not known." : err.message;
      return;
    }
    sessionStorage.setItem("marina-token", token);
    location.hash = "#/environments";
  });
  show(el("section", { class: "card" }, el("h1", { text: "Log in to Marina" }),
    el("p", { class: "muted", text: "Use the token `marina up` printed, or one issued for your project." }),
    form));
  input.focus();
}

function logout(message) {
  token = "";
  sessionStorage.removeItem("marina-token");
  location.hash = "#/login";
  if (message) say(message);
}

async function catalogPage() {
  const [{ packages }, { environments }] = await Promise.all([
    api("GET", "/v1/catalog/packages"), api("GET", "/v1/environments")]);
  const cards = packages.map((pkg) => {
    const holder = el("div");
    const button = el("button", { type: "button", class: "primary",
                                  text: "Add to environment", "data-package": pkg.name });
    button.addEventListener("click", () => {
      holder.replaceChildren(addForm(pkg, environments));
      holder.querySelector("select, input").focus();
    });
    return el("article", { class: "card package", "data-name": pkg.name },
      el("h2", { text: pkg.title }),
      el("p", { class: "muted", text: `${pkg.name} ${pkg.version}` }),
      el("p", { text: pkg.description }), button, holder);
  });
  show(el("h1", { text: "Catalog" }), el("div", { class: "grid" }, cards));
}

function addForm(pkg, environments) {
  const envId = `env-for-${pkg.name}`;
  const select = el("select", { id: envId },
    environments.map((env) => el("option", { value: env.id, text: env.name })));
  if (!environments.length) {
    return el("p", { text: "Create an environment first." },
      " ", el("a", { href: "#/environments", text: "Environments" }));
  }
  const form = schemaForm(pkg.properties, {
    idPrefix: `prop-${pkg.name}`, submitLabel: "Add",
    onSubmit: async (properties) => {
      await api("POST", `/v1/environments/${select.value}/services`,
                { package: pkg.name, properties });
      location.hash = `#/environments/${select.value}`;
    },
  });
  form.prepend(el("label", { for: envId, text: "Environment" }), select);
  return form;
}

async function environmentsPage() {
  const { environments } = await api("GET", "/v1/environments");
  const name = el("input", { id: "new-env", name: "name", type: "text", maxlength: 80 });
  const error = el("div", { class: "field-error", role: "status" });
  const form = el("form", {}, el("label", { for: "new-env", text: "New environment" }), name,
    " ", el("button", { type: "submit", class: "primary", text: "Create" }), error);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      const env = await api("POST", "/v1/environments", { name: name.value });
      location.hash = `#/environments/${env.id}`;
    } catch (err) {
      const problems = (err.payload && err.payload.problems) || [];
      error.textContent = problems.length ? `${problems[0].field}: ${problems[0].rule}` : err.message;
    }
  });
  const rows = environments.map((env) => el("tr", {},
    el("td", {}, el("a", { href: `#/environments/${env.id}`, text: env.name })),
    el("td", {}, stateBadge(env.status)), el("td", { text: time(env.updated) })));
  show(el("h1", { text: "Environments" }), el("section", { class: "card" }, form),
    rows.length
      ? el("table", { id: "environments" }, el("thead", {}, el("tr", {},
          el("th", { text: "Name" }), el("th", { text: "Status" }), el("th", { text: "Updated" }))),
        el("tbody", {}, rows))
      : el("p", { class: "muted", text: "No environments yet." }));
}

function environmentPage(envId) {
  const title = el("h1", { text: "Environment" });
  const tree = el("section", { class: "card tree", id: "tree", "aria-live": "polite" });
  const panel = el("section", { class: "card", id: "task-panel", hidden: true });
  const tasks = el("section", { class: "card", id: "tasks" });
  show(title, panel, tree, tasks);
  const url = `/v1/environments/${envId}/events?access_token=${encodeURIComponent(token)}`;
  stream = new EventSource(url);
  stream.addEventListener("environment", (event) => {
    const env = JSON.parse(event.data);
    title.textContent = env.name;
    renderTree(tree, env, panel);
  });
  stream.addEventListener("tasks", (event) => renderTasks(tasks, JSON.parse(event.data)));
  stream.addEventListener("deleted", () => {
    stream.close();
    say("This environment was deleted.");
  });
  stream.onerror = () => {
    if (stream.readyState === EventSource.CLOSED) say("Live updates stopped; reload the page.");
  };
}

function renderTree(tree, env, panel) {
  const objects = Object.fromEntries(env.objects.map((o) => [o["?"].id, o]));
  const items = [];
  for (const obj of env.objects) {
    const type = obj["?"].type;
    if (type === "KubernetesCluster") {
      const nodes = obj.nodes.map((id) => objects[id]).filter(Boolean);
      items.push(el("li", { "data-object": obj["?"].name }, objectLine(obj, panel, env.id),
        endpointLinks(obj.endpoints),
        el("ul", {}, nodes.map((node) => el("li", { "data-object": node["?"].name },
          el("span", { class: "object-name", text: node["?"].name }), " ",
          el("span", { class: "muted", text: `${node["?"].type} ${node.address || ""}` }), " ",
          stateBadge(node.state), " ",
          el("span", { class: "steps" }, Object.entries(node.steps).map(([step, done]) =>
            el("span", { class: done ? "done" : "", text: `${done ? "✓" : "…"} ${step}` }))))))));
    } else if (type === "KubernetesPod") {
      const services = obj.services && obj.services.length ? obj.services : obj.spec.services || [];
      items.push(el("li", { "data-object": obj["?"].name }, objectLine(obj, panel, env.id),
        el("span", { class: "replicas",
                     text: ` replicas ${obj.replicas.ready}/${obj.replicas.desired} ready` }),
        el("ul", {}, services.map((s) => el("li", {
          text: `service ${s.name}: port ${s.port} → ${s.targetPort || s.port} (${s.scope || "internal"})${s.ip ? " at " + s.ip : ""}` })),
          Object.entries(obj.spec.labels || {}).map(([k, v]) => el("li", { class: "muted",
            text: `label ${k}=${v}` }))),
        endpointLinks(obj.endpoints)));
    } else if (type === "KubernetesApplication") {
      items.push(el("li", { "data-object": obj["?"].name }, objectLine(obj, panel, env.id)));
    }
  }
  tree.replaceChildren(el("h2", { text: "Objects" }),
    items.length ? el("ul", {}, items) : el("p", { class: "muted",
      text: "Nothing here yet: add an application from the catalog." }));
}

function endpointLinks(endpoints) {
  const links = (endpoints || []).map(safeUrl).filter(Boolean);
  if (!links.length) return null;
  return el("div", { class: "endpoints" }, "Public: ",
    links.map((href) => el("a", { href, class: "endpoint", target: "_blank",
                                  rel: "noopener", text: href })));
}

function objectLine(obj, panel, envId) {
  const actions = Object.values(obj["?"]._actions || {});
  return el("div", {},
    el("span", { class: "object-name", text: obj["?"].name }), " ",
    el("span", { class: "muted", text: obj["?"].type }), " ",
    obj.state ? stateBadge(obj.state) : null,
    el("div", { class: "actions", role: "group", "aria-label": `Actions of ${obj["?"].name}` },
      actions.map((action) => el("button", {
        type: "button", class: "action", title: action.description, "data-action": action.name,
        "aria-label": `${action.title}: ${obj["?"].name}`, text: action.title,
        onclick: () => openAction(panel, envId, obj, action) }))));
}

function openAction(panel, envId, obj, action) {
  panel.hidden = false;
  const heading = el("h2", { text: `${action.title} — ${obj["?"].name}` });
  const description = el("p", { class: "muted", text: action.description });
  const run = async (args) => {
    const { task_id } = await api("POST", `/v1/environments/${envId}/actions/${action.id}`, args);
    followTask(panel, heading, task_id);
  };
  const hasArgs = Object.keys((action.schema && action.schema.properties) || {}).length > 0;
  if (hasArgs) {
    panel.replaceChildren(heading, description, schemaForm(action.schema, {
      idPrefix: `arg-${action.id}`, submitLabel: "Run", onSubmit: run }));
    panel.querySelector("input, select, textarea").focus();
  } else {
    panel.replaceChildren(heading, description);
    run({}).catch((err) => say(err.message));
  }
}

function followTask(panel, heading, taskId) {
  const state = el("p", { id: "task-state" }, "Task ", el("code", { text: taskId }), " ",
                   stateBadge("queued"));
  const log = el("pre", { class: "log", id: "task-log", "aria-live": "polite" });
  const result = el("div", { id: "task-result" });
  panel.replaceChildren(heading, state, log, result);
  const source = new EventSource(
    `/v1/tasks/${taskId}/events?access_token=${encodeURIComponent(token)}`);
  source.addEventListener("log", (event) => {
    const line = JSON.parse(event.data);
    log.append(`${time(line.time)} ${line.level} ${line.message}\n`);
    log.scrollTop = log.scrollHeight;
  });
  source.addEventListener("task", (event) => {
    const task = JSON.parse(event.data);
    state.replaceChildren("Task ", el("code", { text: taskId }), " ", stateBadge(task.state));
    if (task.state === "succeeded" || task.state === "failed") showResult(result, task);
  });
  source.addEventListener("done", () => source.close());
  source.onerror = () => source.close();
}

function showResult(result, task) {
  const outcome = task.state === "failed" ? "failed" : task.outcome;
  const text = task.state === "failed" ? `Failed: ${task.error}`
    : `${task.outcome === "noop" ? "Nothing changed" : "Changed"}${task.reason ? ": " + task.reason : ""}`;
  result.replaceChildren(el("p", { class: `outcome ${outcome}`, text }),
    ...(task.files || []).map((name) => el("button", {
      type: "button", class: "secondary download", "data-file": name, text: `Download ${name}`,
      onclick: () => download(task.id, name) })));
}

async function download(taskId, name) {
  const blob = await api("GET", `/v1/tasks/${taskId}/files/${encodeURIComponent(name)}`);
  const link = el("a", { href: URL.createObjectURL(blob), download: name });
  document.body.append(link);
  link.click();
  link.remove();
}

function renderTasks(box, tasks) {
  box.replaceChildren(el("h2", { text: "Recent tasks" }), tasks.length
    ? el("table", {}, el("thead", {}, el("tr", {}, ["Action", "State", "Outcome", "Started"].map(
        (h) => el("th", { text: h })))),
      el("tbody", {}, tasks.map((t) => el("tr", { "data-task": t.id },
        el("td", { text: t.method }), el("td", {}, stateBadge(t.state)),
        el("td", { text: t.state === "failed" ? t.error : [t.outcome, t.reason].filter(Boolean).join(": ") }),
        el("td", { text: time(t.created) })))))
    : el("p", { class: "muted", text: "No tasks yet." }));
}

// -- routing ----------------------------------------------------------------

async function route() {
  if (stream) {
    stream.close();
    stream = null;
  }
  say("");
  document.getElementById("logout").hidden = !token;
  const hash = location.hash || "#/environments";
  if (!token && hash !== "#/login") {
    location.hash = "#/login";
    return;
  }
  try {
    if (hash === "#/login") loginPage();
    else if (hash === "#/catalog") await catalogPage();
    else if (hash === "#/environments") await environmentsPage();
    else if (hash.startsWith("#/environments/")) {
      const envId = hash.slice("#/environments/".length);
      await api("GET", `/v1/environments/${envId}`);
      environmentPage(envId);
    } else location.hash = "#/environments";
  } catch (err) {
    if (err instanceof ApiError) {
      if (err.status !== 401) say(err.message);
    } else {
      say("Something went wrong in the page; reload it.");
      console.error(err);
    }
  }
  app.focus({ preventScroll: true });
}

document.getElementById("logout").addEventListener("click", () => logout(""));
window.addEventListener("hashchange", route);
window.addEventListener("unhandledrejection", (event) => {
  const err = event.reason;
  say(err instanceof ApiError ? err.message : "Something went wrong in the page; reload it.");
});
route();
