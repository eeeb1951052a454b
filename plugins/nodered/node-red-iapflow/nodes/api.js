"use strict";
// Document nodes: api get, api add, api update, api addorupdate, api delete, api aggregate,
// api watch and api get jwt. Each works on the instance's connection to iapflow; a message
// with its own msg.jwt runs the command as that user.

const { json, pick, onInput, connection } = require("../lib/nodeutil");

function asList(value) {
    return Array.isArray(value) ? value : [value];
}

function withType(item, type) {
    if (type && item && typeof item === "object" && !item._type) return Object.assign({ _type: type }, item);
    return item;
}

module.exports = function (RED) {
    function ApiGet(config) {
        RED.nodes.createNode(this, config);
        onInput(this, async (client, msg, request) => {
            const data = {
                collectionname: pick(msg, "collectionname", config.collection) || "entities",
                query: pick(msg, "query", json(this, "query", config.query, {})),
                top: Number(pick(msg, "top", config.top)) || 100,
                skip: Number(pick(msg, "skip", config.skip)) || 0,
            };
            const projection = pick(msg, "projection", json(this, "projection", config.projection, null));
            if (projection) data.projection = projection;
            const orderby = pick(msg, "orderby", json(this, "orderby", config.orderby, null));
            if (orderby) data.orderby = orderby;
            msg.payload = (await request("query", data)).result;
        });
    }
    RED.nodes.registerType("api get", ApiGet);

    function ApiAdd(config) {
        RED.nodes.createNode(this, config);
        onInput(this, async (client, msg, request) => {
            const collectionname = pick(msg, "collectionname", config.collection) || "entities";
            const type = pick(msg, "entitytype", config.entitytype);
            if (msg.payload === null || typeof msg.payload !== "object") {
                throw new Error("api add: msg.payload must be an object or a list of objects");
            }
            const results = [];
            for (const item of asList(msg.payload)) {
                results.push((await request("insertone", { collectionname, item: withType(item, type) })).result);
            }
            msg.payload = Array.isArray(msg.payload) ? results : results[0];
        });
    }
    RED.nodes.registerType("api add", ApiAdd);

    function ApiUpdate(config) {
        RED.nodes.createNode(this, config);
        onInput(this, async (client, msg, request) => {
            const collectionname = pick(msg, "collectionname", config.collection) || "entities";
            const query = pick(msg, "query", json(this, "query", config.query, null));
            if (query) {
                // Update operators in msg.payload (e.g. {"$set": {...}}) on the first match.
                const reply = await request("updateone", { collectionname, query, item: msg.payload });
                msg.payload = reply.result;
                return;
            }
            const results = [];
            for (const item of asList(msg.payload)) {
                if (!item || typeof item !== "object" || !item._id) {
                    throw new Error("api update: each document in msg.payload needs an _id (or set a query)");
                }
                results.push((await request("updateone", { collectionname, item })).result);
            }
            msg.payload = Array.isArray(msg.payload) ? results : results[0];
        });
    }
    RED.nodes.registerType("api update", ApiUpdate);

    function ApiAddOrUpdate(config) {
        RED.nodes.createNode(this, config);
        onInput(this, async (client, msg, request) => {
            const collectionname = pick(msg, "collectionname", config.collection) || "entities";
            const uniqeness = pick(msg, "uniqeness", config.uniqeness) || "_id";
            const type = pick(msg, "entitytype", config.entitytype);
            if (msg.payload === null || typeof msg.payload !== "object") {
                throw new Error("api addorupdate: msg.payload must be an object or a list of objects");
            }
            const results = [];
            for (const item of asList(msg.payload)) {
                const data = { collectionname, uniqeness, item: withType(item, type) };
                results.push((await request("insertorupdateone", data)).result);
            }
            msg.payload = Array.isArray(msg.payload) ? results : results[0];
        });
    }
    RED.nodes.registerType("api addorupdate", ApiAddOrUpdate);

    function ApiDelete(config) {
        RED.nodes.createNode(this, config);
        onInput(this, async (client, msg, request) => {
            const collectionname = pick(msg, "collectionname", config.collection) || "entities";
            let deleted = 0;
            for (const entry of asList(msg.payload)) {
                const id = typeof entry === "string" ? entry : entry && entry._id;
                if (!id) throw new Error("api delete: msg.payload must be an id, a document with _id, or a list of them");
                deleted += (await request("deleteone", { collectionname, id })).affectedrows || 0;
            }
            msg.payload = deleted;
        });
    }
    RED.nodes.registerType("api delete", ApiDelete);

    function ApiAggregate(config) {
        RED.nodes.createNode(this, config);
        onInput(this, async (client, msg, request) => {
            const collectionname = pick(msg, "collectionname", config.collection) || "entities";
            const aggregates = pick(msg, "aggregates", json(this, "aggregates", config.aggregates, []));
            msg.payload = (await request("aggregate", { collectionname, aggregates })).result;
        });
    }
    RED.nodes.registerType("api aggregate", ApiAggregate);

    function ApiWatch(config) {
        RED.nodes.createNode(this, config);
        const node = this;
        let key = null;
        let closed = false;
        const collectionname = config.collection || "entities";
        let paths;
        try {
            paths = json(node, "paths", config.paths, []);
        } catch (err) {
            node.error(err.message);
            node.status({ fill: "red", shape: "ring", text: "bad paths" });
            return;
        }
        connection.get().then(async (client) => {
            key = await client.watch(collectionname, asList(paths).filter(Boolean), (change) => {
                node.send({
                    payload: change.fullDocument || change.documentKey,
                    operation: change.operationType,
                    documentKey: change.documentKey,
                    collectionname,
                    change,
                });
            });
            if (closed) await client.unwatch(key);
            else node.status({ fill: "green", shape: "dot", text: `watching ${collectionname}` });
        }).catch((err) => {
            node.error("api watch: " + err.message);
            node.status({ fill: "red", shape: "ring", text: String(err.message).slice(0, 60) });
        });
        node.on("close", (done) => {
            closed = true;
            if (!key) return done();
            connection.get().then((client) => client.unwatch(key)).then(() => done(), () => done());
        });
    }
    RED.nodes.registerType("api watch", ApiWatch);

    function ApiGetJwt(config) {
        RED.nodes.createNode(this, config);
        onInput(this, async (client, msg) => {
            const reply = await client.request("signin", {
                jwt: typeof msg.jwt === "string" && msg.jwt ? msg.jwt : client.jwt,
                validate_only: true,
                longtoken: !!config.longtoken,
            });
            msg.jwt = reply.jwt;
            msg.user = reply.user;
        });
    }
    RED.nodes.registerType("api get jwt", ApiGetJwt);
};
