// What the server tells every client: GET /config, and the signed-in user's sign-in reply
// (version, limits, roles); the admins' maintenance commands (housekeeping, clearcache).
import { registerPage } from "../../registry.js";
import { h, pretty, run, statusLine, table } from "../../ui.js";

function maintenance(api) {
  const status = statusLine();
  const housekeeping = h("button", { type: "button" }, "Run housekeeping");
  housekeeping.addEventListener("click", () =>
    run(housekeeping, status, async () => {
      const reply = await api.call("housekeeping", {});
      status.show(`Housekeeping done: ${JSON.stringify(reply.result)}`, "ok");
    }),
  );
  const clearcache = h("button", { type: "button" }, "Clear role cache");
  clearcache.addEventListener("click", () =>
    run(clearcache, status, async () => {
      await api.call("customcommand", { command: "clearcache" });
      status.show("Role cache cleared.", "ok");
    }),
  );
  return [
    h("h2", {}, "Maintenance"),
    h("p", { class: "muted" }, "For admins; the server refuses anyone else."),
    h("div", { class: "actions" }, housekeeping, clearcache),
    status,
  ];
}

registerPage({
  id: "config",
  title: "Config",
  order: 90,
  async render(ctx) {
    const { api } = ctx;
    ctx.heading("Config");
    const status = statusLine();
    ctx.main.append(status);
    try {
      const response = await fetch("/config");
      const config = await response.json();
      ctx.main.append(h("h2", {}, "Server (GET /config)"), h("pre", { class: "json", "aria-label": "server config" }, pretty(config)));
    } catch (err) {
      status.error(err);
    }
    const info = api.info || {};
    const user = api.user || {};
    ctx.main.append(
      h("h2", {}, "This session"),
      table(
        [
          { title: "Setting", cell: (r) => r[0] },
          { title: "Value", cell: (r) => String(r[1] ?? "") },
        ],
        [
          ["server version", info.version],
          ["signed in as", `${user.name} (${user.username})`],
          ["user id", user._id],
          ["websocket piece size", info.websocket_package_size],
          ["watches supported", info.supports_watch],
          ["connection id", info.openflow_uniqueid],
        ],
      ),
      ...maintenance(api),
      h("h2", {}, "Your roles"),
      h("ul", { "aria-label": "your roles" }, (user.roles || []).map((r) => h("li", {}, r.name))),
      h(
        "p",
        { class: "muted" },
        "The server's own settings live in its TOML file and IAPFLOW_ environment variables; the API does not expose them.",
      ),
    );
  },
});
