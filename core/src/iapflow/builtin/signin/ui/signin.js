// Sign in with a username and password (the signin command); the token stays in this tab.
import { registerPage } from "../../registry.js";
import { field, h, run, statusLine } from "../../ui.js";

registerPage({
  id: "signin",
  title: "Sign in",
  public: true,
  nav: false,
  render(ctx) {
    ctx.heading("Sign in");
    const status = statusLine();
    const notice = ctx.notice();
    if (notice) status.show(notice, notice.startsWith("Signed out") ? "info" : "error");
    const username = h("input", { name: "username", autocomplete: "username", required: true });
    const password = h("input", { name: "password", type: "password", autocomplete: "current-password", required: true });
    const submit = h("button", { type: "submit", class: "primary" }, "Sign in");
    const form = h(
      "form",
      { class: "signin card" },
      field("Username", username).row,
      field("Password", password).row,
      submit,
      status,
    );
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      run(submit, status, async () => {
        await ctx.api.signin({ username: username.value, password: password.value });
        const next = ctx.params.get("next");
        if (next && next.startsWith("#/") && !next.startsWith("#/signin")) location.hash = next;
        else ctx.navigate(ctx.home());
      });
    });
    ctx.main.append(form);
    if (ctx.api.user) {
      status.show(`Signed in as ${ctx.api.user.username}. Signing in again switches user.`);
    }
    username.focus();
  },
});
