// What the server tells every client: GET /config, and the signed-in user's sign-in reply
// (version, limits, roles).
import { registerPage } from "../registry.js";
import { h, pretty, statusLine, table } from "../ui.js";

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
      h("h2", {}, "Your roles"),
      h("ul", {}, (user.roles || []).map((r) => h("li", {}, r.name))),
      h(
        "p",
        { class: "muted" },
        "The server's own settings live in its TOML file and IAPFLOW_ environment variables; the API does not expose them.",
      ),
    );
  },
});
