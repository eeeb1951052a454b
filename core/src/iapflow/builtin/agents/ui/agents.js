// Agents (docs/agents.md): the signed-in user's Node-RED instance (OpenFlow 1.4's per-user
// commands) and the agent documents of the `agents` collection (1.5's startagent and friends),
// each with its state, start, stop, restart, log, a link to the editor, and delete. Which
// runtime runs them, and whether the user may, is the server's business: its refusals are
// shown as it phrased them.
import { principalSearch } from "../../acl.js";
import { registerPage } from "../../registry.js";
import { field, formatDate, h, pager, parseJson, reload, run, setContent, statusLine, table } from "../../ui.js";

const TOP = 25;
const BUSY = ["installing", "starting", "stopping"];
const POLL_MS = 1500;

function stateBadge(instance) {
  if (!instance) return h("span", { class: "state none" }, "not created");
  return h("span", { class: `state ${instance.state}` }, instance.state);
}

function editorLink(instance) {
  if (!instance || !instance.url || instance.state !== "running") return "";
  // Only a web address becomes a link: never javascript:, data: or the like from the server.
  if (!/^https?:\/\//i.test(String(instance.url))) return "";
  return h("a", { href: instance.url, target: "_blank", rel: "noopener noreferrer" }, `Open the editor of ${instance.name}`);
}

function instanceSummary(instance) {
  if (!instance) return h("p", { class: "muted" }, "There is no Node-RED instance yet.");
  const rows = [
    ["Name", instance.name],
    ["State", stateBadge(instance)],
    ["Editor", editorLink(instance) || instance.url || ""],
    ["Started", formatDate(instance.started)],
    ["Restarts", String(instance.restarts ?? 0)],
    ["Process", instance.pid ? `pid ${instance.pid}, port ${instance.port}` : ""],
    ["Reason", instance.reason || ""],
  ];
  return h(
    "dl",
    { class: "summary", "aria-label": "instance" },
    rows.filter(([, value]) => value !== "").map(([term, value]) => [h("dt", {}, term), h("dd", {}, value)]),
  );
}

function logView(title, text) {
  return [h("h2", {}, title), h("pre", { class: "json log", tabindex: "0", "aria-label": title }, text || "(empty)")];
}

/** A button that runs `action` with its status line, then `after`. */
function actionButton(text, status, action, after, attrs = {}) {
  const button = h("button", { type: "button", ...attrs }, text);
  button.addEventListener("click", () => {
    if (attrs.confirm && !window.confirm(attrs.confirm)) return;
    run(button, status, async () => {
      await action();
      await after();
    });
  });
  return button;
}

/** The Node-RED instance of one user (`userId`, default the signed-in user). */
async function noderedSection(ctx, userId, timers) {
  const { api } = ctx;
  const who = userId ? { _id: userId } : {};
  const status = statusLine();
  const body = h("div", {});
  const log = h("div", { "aria-live": "polite" });
  const section = h("section", { class: "card", "aria-labelledby": "nodered-heading" });
  let title = "Your Node-RED instance";
  if (userId) {
    const found = await api.call("query", { collectionname: "users", query: { _id: userId }, projection: { name: 1, username: 1 }, top: 1 });
    const user = (found.result || [])[0];
    title = `Node-RED instance of ${user ? user.username || user.name : `user ${userId}`}`;
  }
  section.append(h("h2", { id: "nodered-heading" }, title), body, status, log);
  ctx.main.append(section);

  async function refresh() {
    clearTimeout(timers.nodered);
    let instance;
    try {
      instance = (await api.call("getnoderedinstance", who)).result;
    } catch (err) {
      setContent(body);
      status.error(err);
      return;
    }
    const after = refresh;
    const call = (command, extra = {}) => () => api.call(command, { ...who, ...extra });
    const showLog = async () => {
      const reply = await api.call("getnoderedinstancelog", { ...who, lines: 200 });
      setContent(log, logView(`Log of ${instance.name}`, reply.result));
    };
    const buttons = [];
    if (!instance) {
      buttons.push(actionButton("Create and start", status, call("ensurenoderedinstance"), after, { class: "primary" }));
    } else {
      if (!["running", ...BUSY].includes(instance.state)) {
        buttons.push(actionButton("Start", status, call("startnoderedinstance"), after, { class: "primary" }));
      }
      if (instance.state !== "stopped") buttons.push(actionButton("Stop", status, call("stopnoderedinstance"), after));
      buttons.push(actionButton("Restart", status, call("restartnoderedinstance"), after));
      buttons.push(actionButton("Show log", status, showLog, async () => {}));
      buttons.push(
        actionButton("Delete", status, call("deletenoderedinstance"), async () => {
          setContent(log);
          await refresh();
        }, { class: "danger", confirm: `Delete the Node-RED instance ${instance.name} with its flows and data?` }),
      );
    }
    setContent(body, instanceSummary(instance), h("div", { class: "actions" }, buttons));
    if (instance && BUSY.includes(instance.state) && !timers.left) timers.nodered = setTimeout(refresh, POLL_MS);
  }
  await refresh();
}

/** The agent documents the user may read, with each one's instance. */
async function agentsSection(ctx, timers) {
  const { api, params } = ctx;
  const skip = Math.max(0, Number(params.get("skip")) || 0);
  const status = statusLine();
  const results = h("div", {});
  const log = h("div", { "aria-live": "polite" });

  async function load() {
    clearTimeout(timers.agents);
    await reload(status, async () => {
      const query = { _type: "agent" };
      const [page, count] = await Promise.all([
        api.call("query", { collectionname: "agents", query, top: TOP, skip, orderby: { name: 1 } }),
        api.call("count", { collectionname: "agents", query }),
      ]);
      const agents = page.result || [];
      const pods = await Promise.all(
        agents.map((a) =>
          a.image
            ? api.call("getagentpods", { agentid: a._id }).then(
                (r) => (r.results || [])[0] || null,
                (err) => ({ name: a.slug, state: "unknown", reason: err.message }),
              )
            : null,
        ),
      );
      const instanceOf = new Map(agents.map((a, i) => [a._id, pods[i]]));
      const actions = (agent) => {
        const name = agent.name || agent.slug;
        const call = (command) => () => api.call(command, { agentid: agent._id });
        const showLog = async () => {
          const reply = await api.call("getagentlog", { agentid: agent._id });
          setContent(log, logView(`Log of agent ${name}`, reply.result));
        };
        if (!agent.image) return h("span", { class: "muted" }, "runs elsewhere (no image)");
        const label = (verb) => ({ "aria-label": `${verb} ${name}` });
        const instance = instanceOf.get(agent._id);
        const up = instance && ["running", ...BUSY].includes(instance.state);
        return h(
          "span",
          { class: "actions inline" },
          up ? null : actionButton("Start", status, call("startagent"), load, label("Start")),
          instance && instance.state !== "stopped" ? actionButton("Stop", status, call("stopagent"), load, label("Stop")) : null,
          instance ? actionButton("Restart", status, call("deleteagentpod"), load, label("Restart")) : null,
          instance ? actionButton("Log", status, showLog, async () => {}, label("Log of")) : null,
          actionButton("Delete", status, call("deleteagent"), load, {
            ...label("Delete"),
            class: "danger",
            confirm: `Delete agent ${name}, its document and its instance?`,
          }),
        );
      };
      setContent(
        results,
        table(
          [
            { title: "Agent", cell: (a) => a.name || a.slug },
            { title: "Slug", cell: (a) => h("code", {}, a.slug || "") },
            { title: "Image", cell: (a) => a.image || "" },
            { title: "State", cell: (a) => (a.image ? stateBadge(instanceOf.get(a._id)) : "") },
            { title: "Editor", cell: (a) => editorLink(instanceOf.get(a._id)) },
            { title: "", cell: actions },
          ],
          agents,
          `${count.result} agent${count.result === 1 ? "" : "s"} you may read`,
        ),
        pager({ skip, top: TOP, count: count.result, shown: agents.length }, (s) => ctx.navigate("agents", { skip: s || undefined })),
      );
      if ([...instanceOf.values()].some((p) => p && BUSY.includes(p.state)) && !timers.left) timers.agents = setTimeout(load, POLL_MS);
    });
  }

  const name = h("input", { name: "agentname", required: true, autocomplete: "off", pattern: "[a-z0-9][a-z0-9-]*" });
  const image = h("input", { name: "image", value: "openiap/noderedagent", autocomplete: "off" });
  const environment = h("textarea", { class: "filter", name: "environment", spellcheck: "false", placeholder: '{"TZ": "Europe/Copenhagen"}' });
  const add = h("button", { type: "submit", class: "primary" }, "Add agent");
  const form = h(
    "form",
    { class: "card" },
    h("h3", {}, "Add an agent"),
    h(
      "div",
      { class: "row" },
      h("div", { class: "grow" }, field("Agent name", name, "lower-case letters, digits and -; it names the instance").row),
      h("div", { class: "grow" }, field("Image", image, "used by the docker runtime; empty: a daemon that runs elsewhere").row),
    ),
    field("Environment (JSON)", environment).row,
    h("div", { class: "actions" }, add),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    run(add, status, async () => {
      const slug = name.value.trim();
      const item = { _type: "agent", name: slug, slug, environment: parseJson(environment.value, "Environment") };
      if (image.value.trim()) item.image = image.value.trim();
      await api.call("insertone", { collectionname: "agents", item });
      name.value = "";
      status.show(`Added agent ${slug}; start it from the list.`, "ok");
      await load();
    });
  });

  ctx.main.append(
    h(
      "section",
      { class: "card", "aria-labelledby": "agents-heading" },
      h("h2", { id: "agents-heading" }, "Agents"),
      status,
      results,
      log,
      form,
    ),
  );
  await load();
}

registerPage({
  id: "agents",
  title: "Agents",
  order: 50,
  async render(ctx) {
    const { api, params } = ctx;
    const userId = params.get("user") || "";
    ctx.heading("Agents and Node-RED");
    const timers = {};
    ctx.onLeave(() => {
      timers.left = true;
      clearTimeout(timers.nodered);
      clearTimeout(timers.agents);
    });
    if (userId) ctx.main.append(h("p", {}, h("a", { href: "#/agents" }, "← Your own instance")));
    await noderedSection(ctx, userId, timers);
    if (api.isAdmin && !userId) {
      ctx.main.append(
        h(
          "details",
          { class: "card" },
          h("summary", {}, "Manage another user's Node-RED instance"),
          principalSearch(api, (p) => ctx.navigate("agents", { user: p._id }), "Find user"),
        ),
      );
    }
    if (!userId) await agentsSection(ctx, timers);
  },
});
