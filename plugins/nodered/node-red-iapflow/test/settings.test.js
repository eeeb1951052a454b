"use strict";
// settings.js: what an instance's Node-RED settings hold, and clear errors for what is missing.

const { test, after } = require("node:test");
const assert = require("node:assert/strict");
const buildSettings = require("../settings");
const connection = require("../lib/connection");
const storage = require("../storage");

const base = { url: "ws://127.0.0.1:1/ws", jwt: "t", name: "alice", credentialSecret: "s", ownerId: "o1" };

after(() => connection.close());

test("the settings use the storage module, iapflow sign-in and the HTTP-in middleware", () => {
    const settings = buildSettings(Object.assign({ uiPort: 18999 }, base));
    assert.equal(settings.storageModule, storage);
    assert.equal(settings.adminAuth.type, "credentials");
    assert.equal(typeof settings.adminAuth.tokens, "function");
    assert.equal(typeof settings.adminAuth.authenticate, "function");
    assert.equal(typeof settings.httpNodeMiddleware, "function");
    assert.equal(settings.credentialSecret, "s");
    assert.equal(settings.uiPort, 18999);
    assert.equal(settings.uiHost, "127.0.0.1");
    assert.deepEqual(settings.iapflow, { url: base.url, name: "alice", ownerId: "o1", ownerName: "" });
    assert.ok(!JSON.stringify(settings.iapflow).includes('"t"'), "the token is not in the settings");
    assert.equal(connection.configured(), true);
});

test("environment variables fill what the options leave out, as OpenFlow names them", () => {
    const saved = Object.assign({}, process.env);
    try {
        Object.assign(process.env, {
            api_ws_url: "ws://127.0.0.1:2/ws", jwt: "envtoken", nodered_id: "bob",
            nodered_credential_secret: "envsecret", nodered_sa: "bob", api_allow_anonymous: "true",
        });
        const settings = buildSettings({});
        assert.equal(settings.iapflow.url, "ws://127.0.0.1:2/ws");
        assert.equal(settings.iapflow.name, "bob");
        assert.equal(settings.iapflow.ownerName, "bob");
        assert.equal(settings.credentialSecret, "envsecret");
        let passed = false;
        settings.httpNodeMiddleware({ headers: {} }, {}, () => { passed = true; });
        assert.equal(passed, true, "api_allow_anonymous opens HTTP-in endpoints");
    } finally {
        for (const key of Object.keys(process.env)) if (!(key in saved)) delete process.env[key];
        Object.assign(process.env, saved);
    }
});

test("missing url, token, name or credential secret is a clear error", () => {
    for (const [key, message] of [["url", /no iapflow URL/], ["jwt", /no token/], ["name", /no instance name/], ["credentialSecret", /no credentialSecret/]]) {
        const options = Object.assign({}, base);
        delete options[key];
        assert.throws(() => buildSettings(options), message);
    }
});

test("permissions follow the roles, with OpenFlow's role names", () => {
    const auth = require("../auth");
    const o = { name: "alice", ownerId: "o1" };
    const user = (id, ...roles) => ({ _id: id, username: id, roles: roles.map((name) => ({ name })) });
    assert.equal(auth.permissionsFor(user("o1"), o), "*");
    assert.equal(auth.permissionsFor(user("x", "admins"), o), "*");
    assert.equal(auth.permissionsFor(user("x", "nodered admins"), o), "*");
    assert.equal(auth.permissionsFor(user("x", "alicenoderedadmins"), o), "*");
    assert.equal(auth.permissionsFor(user("x", "nodered users"), o), "read");
    assert.equal(auth.permissionsFor(user("x", "alicenoderedusers"), o), "read");
    assert.equal(auth.permissionsFor(user("x", "users", "bobnoderedadmins"), o), null);
    assert.equal(auth.mayCallApi(user("x", "alicenoderedapiusers"), o), true);
    assert.equal(auth.mayCallApi(user("x", "nodered users"), o), false);
});
