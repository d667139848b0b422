// The one change a discord.js 14 client needs to run on a guild-gateway pod's relay: its REST
// client sends `GET /gateway/bot` (where discord.js learns the gateway's URL) to the pod, and
// every other request to Discord as before.

import { DefaultRestOptions } from "discord.js";

/**
 * REST options for `new Client({ rest: relayRest(url) })`.
 * @param {string} relayUrl the pod's relay, e.g. `ws://gateway-0.gateway:3002`
 * @param {object} [rest] other REST options to keep (a `makeRequest` of your own is wrapped)
 */
export function relayRest(relayUrl, rest = {}) {
  const gatewayBot = `${relayUrl.replace(/^ws/, "http")}/api/v10/gateway/bot`;
  const next = rest.makeRequest ?? DefaultRestOptions.makeRequest;
  return {
    ...rest,
    makeRequest: (url, init) => next(new URL(url).pathname.endsWith("/gateway/bot") ? gatewayBot : url, init),
  };
}
