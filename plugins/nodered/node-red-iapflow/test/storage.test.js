"use strict";
// storage.js called directly, as Node-RED calls it, against a real iapflow server. Reloading
// after someone else's change is tested on a real Node-RED in nodered.test.js.

const { test, before, after } = require("node:test");
const assert = require("node:assert/strict");
const connection = require("../lib/connection");
const storage = require("../storage");
const { URL, adminClient, makeUser, uid } = require("./helpers");

let admin;
let owner;
const name = "st" + uid();

before(async () => {
    admin = await adminClient();
    owner = await makeUser(admin);
    connection.configure({ url: URL, jwt: owner.jwt });
    await storage.init({ iapflow: { name, watch: false } }, { log: console });
});

after(async () => {
    await storage.close();
    await connection.close();
    await admin.close();
});

test("an instance with nothing stored starts empty", async () => {
    assert.deepEqual(await storage.getFlows(), []);
    assert.deepEqual(await storage.getCredentials(), {});
    assert.deepEqual(await storage.getSettings(), {});
    assert.deepEqual(await storage.getSessions(), {});
});

test("flows, credentials, settings and sessions round trip through the nodered collection", async () => {
    const flows = [{ id: "t1", type: "tab", label: "one" }, { id: "n1", type: "comment", z: "t1", name: "2026-01-01T00:00:00Z" }];
    await storage.saveFlows(flows, { username: owner.username });
    assert.deepEqual(await storage.getFlows(), flows);
    const again = [{ id: "t1", type: "tab", label: "two" }];
    await storage.saveFlows(again, { username: owner.username });
    assert.deepEqual(await storage.getFlows(), again);
    const encrypted = { $: "0123abcd" };
    await storage.saveCredentials(encrypted);
    assert.deepEqual(await storage.getCredentials(), encrypted);
    await storage.saveSettings({ _credentialSecret: undefined, nodes: { a: 1 } });
    assert.deepEqual(await storage.getSettings(), { nodes: { a: 1 } });
    await storage.saveSessions({ tok: { user: "x", expires: 1 } });
    assert.deepEqual(await storage.getSessions(), { tok: { user: "x", expires: 1 } });

    const docs = await admin.query("nodered", { nodered_id: name });
    const byType = Object.fromEntries(docs.map((d) => [d._type, d]));
    assert.deepEqual(Object.keys(byType).sort(), ["credential", "flow", "session", "setting"]);
    assert.equal(docs.length, 4, "one document per kind, updated in place");
    assert.equal(typeof byType.flow.flows, "string");
    assert.equal(byType.flow.deployedby, owner.username);
    assert.equal(byType.credential.credentials, JSON.stringify(encrypted));
    assert.equal(byType.flow._createdby, owner.username);
});

test("another user cannot read the instance's documents", async () => {
    const other = await makeUser(admin);
    const { Client } = require("../lib/client");
    const client = new Client({ url: URL, jwt: other.jwt });
    await client.connect();
    try {
        assert.deepEqual(await client.query("nodered", { nodered_id: name }), []);
    } finally {
        await client.close();
    }
});

test("library entries: a body by path, folders listed with their files' meta", async () => {
    await storage.saveLibraryEntry("functions", "tools/double.js", { name: "double", outputs: 1 }, "return msg;");
    await storage.saveLibraryEntry("functions", "tools/deep/x.js", {}, "x");
    await storage.saveLibraryEntry("flows", "saved", {}, "[]");
    assert.equal(await storage.getLibraryEntry("functions", "tools/double.js"), "return msg;");
    assert.deepEqual(await storage.getLibraryEntry("functions", "tools"), ["deep", { name: "double", outputs: 1, fn: "double.js" }]);
    assert.deepEqual(await storage.getLibraryEntry("functions", ""), ["tools"]);
    assert.equal(await storage.getLibraryEntry("flows", "saved"), "[]");
    await storage.saveLibraryEntry("functions", "tools/double.js", { name: "double", outputs: 2 }, "return [msg, msg];");
    assert.equal(await storage.getLibraryEntry("functions", "tools/double.js"), "return [msg, msg];");
    await assert.rejects(storage.getLibraryEntry("functions", "nothing/here.js"), /not found/);
});
