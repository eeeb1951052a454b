"use strict";
// Work item nodes: "workitem add" (pushworkitem), "workitem pop" (popworkitem; first output
// the item, second output when the queue had nothing due) and "workitem update"
// (updateworkitem on msg.workitem with a state).

const { pick, onInput } = require("../lib/nodeutil");

module.exports = function (RED) {
    function WorkitemAdd(config) {
        RED.nodes.createNode(this, config);
        onInput(this, async (client, msg, request) => {
            const wiq = pick(msg, "wiq", config.wiq);
            if (!wiq) throw new Error("workitem add: no work item queue: set one, or send msg.wiq");
            const data = {
                wiq,
                name: pick(msg, "name", config.name) || "workitem", // the node's name names the item
                payload: msg.payload && typeof msg.payload === "object" ? msg.payload : { value: msg.payload },
            };
            const priority = Number(pick(msg, "priority", config.priority));
            if (priority) data.priority = priority;
            if (msg.nextrun) data.nextrun = msg.nextrun;
            msg.workitem = (await request("pushworkitem", data)).result;
            msg.payload = msg.workitem.payload;
        });
    }
    RED.nodes.registerType("workitem add", WorkitemAdd);

    function WorkitemPop(config) {
        RED.nodes.createNode(this, config);
        onInput(this, async (client, msg, request) => {
            const wiq = pick(msg, "wiq", config.wiq);
            if (!wiq) throw new Error("workitem pop: no work item queue: set one, or send msg.wiq");
            const item = (await request("popworkitem", { wiq })).result;
            if (!item) return [null, msg];
            msg.workitem = item;
            msg.payload = item.payload;
            return [msg, null];
        });
    }
    RED.nodes.registerType("workitem pop", WorkitemPop);

    function WorkitemUpdate(config) {
        RED.nodes.createNode(this, config);
        onInput(this, async (client, msg, request) => {
            const item = msg.workitem;
            if (!item || !item._id) throw new Error("workitem update: msg.workitem (from workitem pop) is missing");
            const data = { _id: item._id, state: pick(msg, "state", config.state) || "successful" };
            if (msg.payload && typeof msg.payload === "object") data.payload = msg.payload;
            if (msg.error || config.errormessage) {
                data.errormessage = String((msg.error && msg.error.message) || msg.error || config.errormessage);
                data.errortype = pick(msg, "errortype", config.errortype) || "application";
            }
            msg.workitem = (await request("updateworkitem", data)).result;
            msg.payload = msg.workitem.payload;
        });
    }
    RED.nodes.registerType("workitem update", WorkitemUpdate);
};
