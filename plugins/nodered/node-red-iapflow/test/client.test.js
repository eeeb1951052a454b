"use strict";
// lib/client.js against a real iapflow server.

const { test, after } = require("node:test");
const assert = require("node:assert/strict");
const { Client, ReplyError } = require("../lib/client");
const { URL, adminClient, makeUser, uid, waitFor } = require("./helpers");

const open = [];
async function connected(options) {
    const client = new Client(Object.assign({ url: URL, agent: "test" }, options));
    open.push(client);
    await client.connect();
    return client;
}
after(async () => { for (const client of open) await client.close(); });

test("signs in with a password or a jwt; a bad password is refused", async () => {
    const admin = await adminClient();
    open.push(admin);
    const alice = await makeUser(admin);
    const byPassword = await connected({ username: alice.username, password: "pw" });
    assert.equal(byPassword.user.username, alice.username);
    const byToken = await connected({ jwt: byPassword.jwt });
    assert.equal(byToken.user._id, alice.user._id);
    const bad = new Client({ url: URL, username: alice.username, password: "wrong" });
    open.push(bad);
    await assert.rejects(bad.connect(), ReplyError);
    const forged = new Client({ url: URL, jwt: "a.b.c" });
    open.push(forged);
    await assert.rejects(forged.connect(), /invalid token/);
});

test("documents round trip, errors carry the server's reason, large messages go in pieces", async () => {
    const admin = await adminClient();
    open.push(admin);
    const marker = uid();
    const big = "x".repeat(100000);
    const stored = await admin.insertOne("entities", { _type: "clienttest", marker, big });
    assert.equal(stored.big.length, 100000);
    const found = await admin.query("entities", { marker });
    assert.equal(found.length, 1);
    assert.equal(found[0].big, big);
    const updated = await admin.updateOne("entities", { $set: { n: 1 } }, { marker });
    assert.equal(updated.n, 1);
    const upserted = await admin.insertOrUpdateOne("entities", { _type: "clienttest", marker, n: 2 }, "marker");
    assert.equal(upserted._id, stored._id);
    const counted = await admin.aggregate("entities", [{ $match: { marker } }, { $count: "n" }]);
    assert.deepEqual(counted, [{ n: 1 }]);
    assert.equal(await admin.deleteOne("entities", stored._id), 1);
    await assert.rejects(admin.request("nosuchcommand", {}), (err) => {
        assert.ok(err instanceof ReplyError);
        assert.match(err.message, /Unknown command/);
        return true;
    });
});

test("watch events and queue request/reply between two clients", async () => {
    const admin = await adminClient();
    open.push(admin);
    const marker = uid();
    const seen = [];
    const key = await admin.watch("entities", [{ $match: { marker } }], (change) => seen.push(change));
    await admin.insertOne("entities", { _type: "clienttest", marker });
    await waitFor(() => seen.length === 1, "a watch event");
    assert.equal(seen[0].operationType, "insert");
    await admin.unwatch(key);

    const worker = await adminClient();
    open.push(worker);
    const queue = "clientq" + uid();
    await worker.registerQueue(queue, async (message) => {
        await worker.queueMessage({
            queuename: message.replyto, correlationId: message.correlationId,
            data: { doubled: message.data.n * 2 }, striptoken: true,
        });
    });
    const reply = await admin.rpc(queue, { n: 4 });
    assert.equal(reply.data.doubled, 8);
    await assert.rejects(admin.rpc("noqueue" + uid(), { n: 1 }, { timeout: 3000 }), /timed out|no reply/);
});

test("after a dropped connection it signs in again and keeps its queues and watches", async () => {
    const admin = await adminClient();
    open.push(admin);
    const queue = "reconnectq" + uid();
    const got = [];
    await admin.registerQueue(queue, async (message) => { got.push(message.data); });
    const marker = uid();
    const seen = [];
    await admin.watch("entities", [{ $match: { marker } }], (change) => seen.push(change));
    const again = new Promise((resolve) => admin.once("connected", resolve));
    admin.ws.terminate();
    // A request made while the connection is down waits for it to come back.
    const whileDown = admin.insertOne("entities", { _type: "clienttest", marker: "down" + marker });
    await again;
    assert.equal((await whileDown).marker, "down" + marker);
    const sender = await adminClient();
    open.push(sender);
    await sender.queueMessage({ queuename: queue, data: { hello: 1 } });
    await waitFor(() => got.length === 1, "a message on the re-registered queue");
    await sender.insertOne("entities", { _type: "clienttest", marker });
    await waitFor(() => seen.length === 1, "a watch event after reconnecting");
});
