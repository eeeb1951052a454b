"use strict";
// Queue nodes. "queue in" consumes a queue through iapflow and sends a message per delivery
// (payload without the sender's __jwt/__user, which go to msg.jwt and msg.user; replyto and
// correlationId kept for a reply). "queue out" sends msg.payload to a queue, answers the
// message's sender when it has no queue of its own and the message came from a queue in, or,
// with "wait for reply", sends a request and passes on the answer.

const { pick, onInput, trackConnection, connection } = require("../lib/nodeutil");

function unwrap(data) {
    const msg = { payload: data };
    if (data && typeof data === "object" && !Array.isArray(data)) {
        const payload = Object.assign({}, data);
        if (payload.__jwt !== undefined) { msg.jwt = payload.__jwt; delete payload.__jwt; }
        if (payload.__user !== undefined) { msg.user = payload.__user; delete payload.__user; }
        msg.payload = payload;
    }
    return msg;
}

module.exports = function (RED) {
    function QueueIn(config) {
        RED.nodes.createNode(this, config);
        const node = this;
        let name = null;
        let closed = false;
        trackConnection(node);
        connection.get().then(async (client) => {
            name = await client.registerQueue(config.queue || "", async (message) => {
                const msg = unwrap(message.data);
                Object.assign(msg, {
                    queuename: message.queuename,
                    replyto: message.replyto,
                    correlationId: message.correlationId,
                    routingkey: message.routingkey,
                    exchangename: message.exchangename,
                });
                node.send(msg);
            });
            if (closed) await client.closeQueue(name);
            else node.status({ fill: "green", shape: "dot", text: `consuming ${name}` });
        }).catch((err) => {
            node.error(`queue in: cannot consume ${config.queue || "a temporary queue"}: ${err.message}`);
            node.status({ fill: "red", shape: "ring", text: String(err.message).slice(0, 60) });
        });
        node.on("close", (done) => {
            closed = true;
            if (!name) return done();
            connection.get().then((client) => client.closeQueue(name)).then(() => done(), () => done());
        });
    }
    RED.nodes.registerType("queue in", QueueIn);

    function QueueOut(config) {
        RED.nodes.createNode(this, config);
        onInput(this, async (client, msg, request) => {
            const queuename = pick(msg, "queuename", config.queue);
            const expiration = Number(pick(msg, "expiration", config.expiration)) || undefined;
            if (!config.queue && msg.replyto) {
                // Answer the request this message came with (from a queue in).
                await request("queuemessage", {
                    queuename: msg.replyto, correlationId: msg.correlationId,
                    data: msg.payload, striptoken: true,
                });
                return;
            }
            if (!queuename) throw new Error("queue out: no queue: set one, or send msg.queuename");
            if (config.rpc) {
                const reply = await client.rpc(queuename, msg.payload, {
                    timeout: expiration || 30000, striptoken: !!config.striptoken,
                });
                Object.assign(msg, unwrap(reply.data), { correlationId: reply.correlationId });
                return;
            }
            const data = { queuename, data: msg.payload, striptoken: !!config.striptoken };
            if (expiration) data.expiration = expiration;
            const reply = await request("queuemessage", data);
            msg.correlationId = reply.correlationId;
        });
    }
    RED.nodes.registerType("queue out", QueueOut);
};
