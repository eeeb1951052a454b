// Work item queues (docs/workitems.md): the queues the signed-in user may read, with how many
// items each holds per state, and a form to add one (addworkitemqueue). A queue opens on the
// "workitemqueue" page, with its items and settings.
import { registerPage } from "../../registry.js";
import { escapeRegex, field, followLive, h, link, pager, reload, run, setContent, statusLine, table } from "../../ui.js";

const TOP = 25;
export const STATES = ["new", "processing", "successful", "failed"];

/** Item counts per queue id and state: {wiqid: {state: n}} (only items the user may read). */
export async function stateCounts(api, wiqids) {
  if (!wiqids.length) return {};
  const reply = await api.call("aggregate", {
    collectionname: "workitems",
    aggregates: [
      { $match: { wiqid: { $in: wiqids } } },
      { $group: { _id: { wiqid: "$wiqid", state: "$state" }, n: { $sum: 1 } } },
    ],
  });
  const counts = {};
  for (const row of reply.result || []) {
    const { wiqid, state } = row._id || {};
    counts[wiqid] = counts[wiqid] || {};
    counts[wiqid][state] = row.n;
  }
  return counts;
}

/** Numbers typed into a settings form: empty fields are left out, others must be numbers. */
export function numbers(inputs) {
  const out = {};
  for (const [key, input] of Object.entries(inputs)) {
    const text = input.value.trim();
    if (text === "") continue;
    const value = Number(text);
    if (!Number.isFinite(value)) throw new Error(`${key} must be a number`);
    out[key] = value;
  }
  return out;
}

function addQueueForm(ctx, status) {
  const name = h("input", { name: "name", required: true, autocomplete: "off" });
  const maxretries = h("input", { name: "maxretries", type: "number", min: "1", value: "3" });
  const retrydelay = h("input", { name: "retrydelay", type: "number", min: "0", value: "0" });
  const initialdelay = h("input", { name: "initialdelay", type: "number", min: "0", value: "0" });
  const amqpqueue = h("input", { name: "amqpqueue", autocomplete: "off" });
  const add = h("button", { type: "submit", class: "primary" }, "Add queue");
  const form = h(
    "form",
    { class: "card" },
    h("h2", {}, "Add a work item queue"),
    h(
      "div",
      { class: "row" },
      h("div", { class: "grow" }, field("New queue name", name).row),
      field("Max retries", maxretries).row,
      field("Retry delay (s)", retrydelay).row,
      field("Initial delay (s)", initialdelay).row,
    ),
    field("Message queue to nudge (optional)", amqpqueue, "Workers listening on this queue hear when items are waiting.").row,
    h("div", { class: "actions" }, add),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    run(add, status, async () => {
      const data = { name: name.value.trim(), ...numbers({ maxretries, retrydelay, initialdelay }) };
      if (amqpqueue.value.trim()) data.amqpqueue = amqpqueue.value.trim();
      const reply = await ctx.api.call("addworkitemqueue", data);
      ctx.navigate("workitemqueue", { id: reply.result._id, created: "1" });
    });
  });
  return form;
}

registerPage({
  id: "workitems",
  title: "Work items",
  order: 45,
  async render(ctx) {
    const { api, params } = ctx;
    const name = params.get("name") || "";
    const skip = Math.max(0, Number(params.get("skip")) || 0);
    ctx.heading("Work item queues");
    const status = statusLine();
    const nameInput = h("input", { type: "search", name: "name", value: name, autocomplete: "off" });
    const filterButton = h("button", { type: "submit" }, "Filter");
    const filter = h(
      "form",
      { class: "row" },
      h("div", { class: "grow" }, field("Queue name contains", nameInput).row),
      filterButton,
    );
    const go = (newSkip) => ctx.navigate("workitems", { name: nameInput.value.trim(), skip: newSkip || undefined });
    filter.addEventListener("submit", (event) => {
      event.preventDefault();
      go(0);
    });
    const live = h("p", { class: "live", "aria-live": "off" });
    const results = h("div", { class: "results" });
    ctx.main.append(filter, status, live, results, addQueueForm(ctx, status));

    const query = { _type: "workitemqueue" };
    if (name) query.name = { $regex: escapeRegex(name), $options: "i" };
    const load = () => reload(status, async () => {
      const [page, count] = await Promise.all([
        api.call("query", { collectionname: "mq", query, top: TOP, skip, orderby: { name: 1 } }),
        api.call("count", { collectionname: "mq", query }),
      ]);
      const queues = page.result || [];
      const counts = await stateCounts(api, queues.map((q) => q._id));
      const countCell = (state) => (q) => String((counts[q._id] || {})[state] || 0);
      setContent(
        results,
        table(
          [
            { title: "Queue", cell: (q) => link("workitemqueue", { id: q._id }, q.name) },
            ...STATES.map((state) => ({ title: state, cell: countCell(state) })),
            { title: "Max retries", cell: (q) => String(q.maxretries ?? "") },
            { title: "Retry delay", cell: (q) => `${q.retrydelay ?? 0} s` },
          ],
          queues,
          `${count.result} work item queue${count.result === 1 ? "" : "s"} you may read`,
        ),
        pager({ skip, top: TOP, count: count.result, shown: queues.length }, go),
      );
    });
    await load();
    // Live: queues added or changed by others, and the item counts as items move.
    await followLive(ctx, live, "mq", load, { aggregates: [{ $match: { _type: "workitemqueue" } }] });
    await followLive(ctx, live, "workitems", load);
  },
});
