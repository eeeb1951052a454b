"use strict";
// auth.js against hostile input: malformed Authorization headers, tokens of disabled users,
// users without a Node-RED role and owners of other instances, all checked by a real iapflow
// server; and an iapflow that cannot be reached refuses (503 / null) instead of hanging.
// The middleware gets plain request and response objects (what it reads and calls of Express).

const { test, before, after } = require("node:test");
const assert = require("node:assert/strict");
const auth = require("../auth");
const connection = require("../lib/connection");
const h = require("./helpers");

let admin;

before(async () => {
    admin = await h.adminClient();
});

after(async () => {
    await connection.close();
    if (admin) await admin.close();
});

/** Run the middleware on an Authorization header; {status, body} or {next: true, user}. */
function call(middleware, authorization) {
    return new Promise((resolve) => {
        const req = { headers: authorization === undefined ? {} : { authorization } };
        const res = {
            status(code) {
                this.code = code;
                return this;
            },
            set() {
                return this;
            },
            json(body) {
                resolve({ status: this.code, body });
            },
        };
        middleware(req, res, () => resolve({ next: true, user: req.user }));
    });
}

test("an unreachable iapflow refuses sign-ins instead of hanging", { timeout: 30000 }, async () => {
    const port = await h.freePort(); // nothing listens there
    connection.configure({ url: `ws://127.0.0.1:${port}/ws`, jwt: "t" });
    const options = { name: "inst", ownerId: "o1", cacheSeconds: 0, connectWaitMs: 300 };
    const editor = auth.adminAuth(options);
    assert.equal(await editor.tokens("some.jwt.token"), null);
    assert.equal(await editor.authenticate("someone", "pw"), null);
    const answer = await call(auth.httpNodeMiddleware(options), "Bearer some.jwt.token");
    assert.equal(answer.status, 503);
    assert.match(answer.body.message, /iapflow cannot be reached/);
    await connection.close();
});

test("malformed Authorization headers get 401, never a crash", { timeout: 60000 }, async () => {
    connection.configure({ url: h.URL, username: h.ADMIN_USER, password: h.ADMIN_PASSWORD });
    const api = await h.makeUser(admin, [h.ROLES.noderedApiUsers]);
    const middleware = auth.httpNodeMiddleware({ name: "inst", ownerId: "o1", cacheSeconds: 0 });
    const b64 = (text) => Buffer.from(text).toString("base64");
    for (const header of [
        undefined, "", "Bearer", "Bearer ", "Bearer    ", "JWT", "Basic", "Basic ",
        "Bearer " + "x".repeat(200000), "Bearer not.a.token", "Bearer " + api.jwt + "x",
        "Basic " + b64("nocolon"), "Basic " + b64(":pw"), "Basic !!!not*base64%%",
        "Basic " + Buffer.from([0xff, 0xfe, 0x3a, 0xc3, 0x28]).toString("base64"),
        "Basic " + b64(api.username + ":wrong"), "Digest " + api.jwt, api.jwt,
    ]) {
        const answer = await call(middleware, header);
        assert.equal(answer.status, 401, String(header).slice(0, 40));
    }
    // the same user, well-formed, is let in (both schemes)
    assert.equal((await call(middleware, "Bearer " + api.jwt)).next, true);
    assert.equal((await call(middleware, "JWT " + api.jwt)).next, true);
    assert.equal((await call(middleware, "Basic " + b64(api.username + ":pw"))).next, true);
});

test("disabled users, users without roles and other instances' owners are refused", { timeout: 60000 }, async () => {
    connection.configure({ url: h.URL, username: h.ADMIN_USER, password: h.ADMIN_PASSWORD });
    const owner = await h.makeUser(admin, [h.ROLES.personalNoderedUsers]);
    const other = await h.makeUser(admin, [h.ROLES.personalNoderedUsers]);
    const plain = await h.makeUser(admin);
    const disabled = await h.makeUser(admin, [h.ROLES.noderedAdmins, h.ROLES.noderedApiUsers]);
    await admin.updateOne("users", { $set: { disabled: true } }, { _id: disabled.user._id });
    const options = { name: owner.username, ownerId: owner.user._id, ownerName: owner.username, cacheSeconds: 0 };
    const editor = auth.adminAuth(options);
    const middleware = auth.httpNodeMiddleware(options);
    assert.equal((await editor.tokens(owner.jwt)).permissions, "*");
    // another instance's owner is nobody here, whether by token or password
    assert.equal(await editor.tokens(other.jwt), null);
    assert.equal(await editor.authenticate(other.username, "pw"), null);
    assert.equal((await call(middleware, "Bearer " + other.jwt)).status, 403);
    assert.equal(await editor.tokens(plain.jwt), null);
    assert.equal((await call(middleware, "Bearer " + plain.jwt)).status, 403);
    // a disabled user's token and password stop working, whatever their roles
    assert.equal(await editor.tokens(disabled.jwt), null);
    assert.equal(await editor.authenticate(disabled.username, "pw"), null);
    assert.equal((await call(middleware, "Bearer " + disabled.jwt)).status, 401);
    // non-string input from Node-RED's side is refused before asking iapflow
    assert.equal(await editor.tokens({ jwt: owner.jwt }), null);
    assert.equal(await editor.authenticate(owner.username, { $ne: "" }), null);
});
