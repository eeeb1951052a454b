// Nav entries for pages that are not built yet. A real page registered with the same id
// replaces its placeholder, whatever the import order in index.js.
import { registerPage } from "../registry.js";
import { h } from "../ui.js";

const later = [
  { id: "queues", title: "Queues", order: 40 },
  { id: "workitems", title: "Work items", order: 45 },
  { id: "agents", title: "Agents", order: 50 },
];

for (const page of later) {
  registerPage({
    ...page,
    placeholder: true,
    render(ctx) {
      ctx.heading(page.title);
      ctx.main.append(h("p", { class: "muted" }, "This page is not part of the web interface yet; use the API."));
    },
  });
}
