/**
 * Client for the guild-gateway data API (`/v1`).
 *
 * Each gateway pod keeps only its own guilds' rows in its own SQLite file, so a read has to
 * reach the pod that owns the guild. The owner is computed here, with the same function as the
 * pods, so a request normally goes straight to the right pod; a pod that disagrees (a stale pod
 * or shard count) answers 421 with the owner's URL, which is followed once.
 *
 * `db(guildId)` and `crossGuildDb(guildIds)` are Kysely instances whose driver is this client
 * (./kysely.ts). kysely is a peer dependency; otherwise node:crypto for md5 and Node's global
 * fetch, nothing else.
 */

import { createHash } from "node:crypto";
import type { Kysely } from "kysely";
import { crossGuildKysely, guildKysely, type GatewayKyselyConfig } from "./kysely.js";

export {
  crossGuildKysely,
  firstKeyword,
  GatewayDialect,
  GatewayUnsupportedError,
  guildKysely,
  statementRoute,
  type GatewayDialectConfig,
  type GatewayKyselyConfig,
  type GatewayStatements,
  type GatewayTarget,
  type StatementRoute,
} from "./kysely.js";

/** How guilds map to pods; must be the deployment's SHARD_STRATEGY. */
export type ShardStrategy = "md5" | "discord";

/** What decides a guild's owner. */
export interface ShardingOptions {
  /** NUM_GATEWAY_PODS of the deployment. */
  pods: number;
  /** Defaults to "md5", the pods' own default. */
  strategy?: ShardStrategy;
  /**
   * The bot's Discord shard count S: the pods' DISCORD_SHARDS. With "discord" a guild is on
   * shard `(id >> 22) % S` and shard s runs on pod `s % pods`, so S must be the deployment's;
   * it is at least `pods` there and defaults to `pods`. With "md5" it moves no guild (defaults
   * to 1). A whole number from 1 to 65536, as the pods accept.
   */
  shards?: number;
}

/** What decides where a guild's owner answers. */
export interface OwnerUrlOptions extends ShardingOptions {
  /** The deployment's POD_URL_TEMPLATE, e.g. `http://gateway-{ordinal}.gateway:3000`. */
  podUrlTemplate: string;
}

/**
 * The first four bytes of md5(guildId) as a big-endian u32.
 *
 * Node hashes a string's UTF-8 bytes, as the pods do, so odd ids (non-numeric, non-ASCII,
 * empty) land on the same pod on both sides.
 */
export function md5U32(guildId: string): number {
  return createHash("md5").update(guildId, "utf8").digest().readUInt32BE(0);
}

/**
 * The pod that owns a guild under the md5 strategy. Same name and result as the bot's own
 * function, so the HTTP services and the gateway pods agree on every guild.
 */
export function getShardForGuild(guildId: string, pods: number): number {
  checkPods(pods);
  return md5U32(guildId) % pods;
}

/** The ordinal of the pod that owns a guild. */
export function ownerOrdinal(guildId: string, options: ShardingOptions): number {
  const { pods, strategy, shards } = checkSharding(options);
  switch (strategy) {
    case "md5":
      return getShardForGuild(guildId, pods);
    case "discord":
      // Shards are dealt to pods round robin: shard s runs on pod s % pods.
      return discordShard(parseSnowflake(guildId), shards) % pods;
  }
}

/** The shard count when none is given, as the pods default DISCORD_SHARDS. */
export function defaultShards(strategy: ShardStrategy, pods: number): number {
  return strategy === "discord" ? pods : 1;
}

/** The pods' upper limit of DISCORD_SHARDS. */
const MAX_SHARDS = 65_536;

/** Sharding options checked as the pods check their configuration, defaults filled in. */
function checkSharding(options: ShardingOptions): Required<ShardingOptions> {
  const { pods, strategy = "md5", shards } = options;
  checkPods(pods);
  if (strategy !== "md5" && strategy !== "discord") {
    throw new TypeError(`unknown shard strategy ${JSON.stringify(strategy)} (md5 or discord)`);
  }
  if (shards === undefined) return { pods, strategy, shards: defaultShards(strategy, pods) };
  if (!Number.isSafeInteger(shards) || shards < 1 || shards > MAX_SHARDS) {
    throw new RangeError(`the number of shards must be a whole number from 1 to ${MAX_SHARDS}, not ${shards}`);
  }
  if (strategy === "discord" && shards < pods) {
    throw new RangeError(
      `with the discord strategy each of the ${pods} pods needs at least one shard, so shards must be at least ${pods}, not ${shards}`,
    );
  }
  return { pods, strategy, shards };
}

/** Discord's routing of a guild to one of `shards` gateway shards. */
function discordShard(guildId: bigint, shards: number): number {
  return Number((guildId >> 22n) % BigInt(shards));
}

const U64_MAX = (1n << 64n) - 1n;

/** Parsed as strictly as the pods do (an unsigned 64-bit decimal), so both sides refuse the same ids. */
function parseSnowflake(guildId: string): bigint {
  if (!/^\+?[0-9]+$/.test(guildId)) {
    throw new TypeError(
      `guild id ${JSON.stringify(guildId)} is not a numeric snowflake (the discord strategy needs one)`,
    );
  }
  const id = BigInt(guildId.replace(/^\+/, ""));
  if (id > U64_MAX) {
    throw new TypeError(`guild id ${JSON.stringify(guildId)} does not fit in 64 bits`);
  }
  return id;
}

function checkPods(pods: number): void {
  if (!Number.isSafeInteger(pods) || pods < 1) {
    throw new RangeError(`the number of pods must be a whole number of at least 1, not ${pods}`);
  }
}

interface ParsedTemplate {
  before: string;
  offset: number;
  after: string;
}

/** Parsed with the pods' rules, so a template that a pod would refuse is refused here too. */
function parseTemplate(template: string): ParsedTemplate {
  const bad = (problem: string) =>
    new TypeError(`pod URL template ${JSON.stringify(template)}: ${problem}`);
  const start = template.indexOf("{ordinal");
  if (start < 0) throw bad("must contain {ordinal} (or {ordinal+N})");
  const close = template.indexOf("}", start);
  if (close < 0) throw bad("an unclosed {ordinal placeholder");
  const plus = template.slice(start + "{ordinal".length, close);
  let offset = 0;
  if (plus !== "") {
    if (!/^\+[0-9]+$/.test(plus) || Number(plus.slice(1)) > 0xffff_ffff) {
      throw bad("the placeholder is {ordinal} or {ordinal+N} with a whole number N");
    }
    offset = Number(plus.slice(1));
  }
  const before = template.slice(0, start);
  const after = template.slice(close + 1);
  if (!before.startsWith("http://") && !before.startsWith("https://")) {
    throw bad("must start with http:// or https://");
  }
  if (after.includes("{ordinal")) throw bad("only one {ordinal} placeholder");
  return { before, offset, after: after.replace(/\/+$/, "") };
}

function formatUrl(template: ParsedTemplate, ordinal: number): string {
  return `${template.before}${ordinal + template.offset}${template.after}`;
}

/**
 * The base URL of pod `ordinal`: `{ordinal}` replaced by the ordinal, or `{ordinal+N}` by the
 * ordinal plus N (local runs give each pod a port of its own that way). Without a trailing
 * slash, as the pods write it in their 421 answers.
 */
export function podUrl(template: string, ordinal: number): string {
  if (!Number.isSafeInteger(ordinal) || ordinal < 0) {
    throw new RangeError(`a pod ordinal is a whole number of at least 0, not ${ordinal}`);
  }
  return formatUrl(parseTemplate(template), ordinal);
}

/** The base URL of the pod that owns a guild. */
export function ownerUrl(guildId: string, options: OwnerUrlOptions): string {
  return podUrl(options.podUrlTemplate, ownerOrdinal(guildId, options));
}

/**
 * A guild's owner as the pods name it: the body of `GET /v1/guilds/{id}/owner` and the lines of
 * `guild-gateway shard-of --json`.
 */
export interface GuildOwner {
  guild_id: string;
  ordinal: number;
  pods: number;
  strategy: ShardStrategy;
  /** The deployment's Discord shard count S (DISCORD_SHARDS, or its default). */
  shards: number;
  /** The owner's base URL, without a trailing slash. */
  url: string;
  /**
   * The committed ownership epoch the answering pod routes by (each live rescale adds one).
   * Pods answer with it; the local `ownerOrdinal` has none.
   */
  epoch?: number;
}

/** The body of a 421 answer: the owner, and a message. */
export interface MisdirectedBody extends GuildOwner {
  error: string;
}

/**
 * A compiled statement. Kysely's `compile()` result fits as it is; only `sql` and `parameters`
 * are sent, since the pods refuse unknown fields.
 */
export interface CompiledQuery {
  readonly sql: string;
  readonly parameters: readonly unknown[];
}

/**
 * Rows as the pods send them: positional, with the column names once. Integers are JSON
 * numbers, so those above 2^53 lose precision (snowflakes are stored as text, so ids do not;
 * the pods refuse such numbers as parameters and in settings). Blobs arrive as
 * `{"$blob": base64}` and are decoded here into `Uint8Array`s.
 */
export interface QueryResult {
  columns: string[];
  rows: unknown[][];
}

/** Which pod answered for which guilds of a cross-guild read, and with how many rows. */
export interface PodRows {
  ordinal: number;
  url: string;
  guilds: string[];
  rows: number;
}

export interface GuildsQueryResult extends QueryResult {
  pods: PodRows[];
}

/**
 * The answer to a write (`POST /v1/guilds/{id}/execute`): the RETURNING rows, if the statement
 * has a RETURNING clause (else no columns and no rows), as a query's; how many rows it changed;
 * and SQLite's last_insert_rowid after it.
 */
export interface ExecuteResult extends QueryResult {
  rows_affected: number;
  last_insert_rowid: number;
}

/** A guild's settings document as committed. */
export interface GuildSettings {
  guild_id: string;
  settings: Record<string, unknown>;
}

/**
 * Any failed call. `status` is the HTTP status (0 when no answer came: network error or
 * timeout) and `error` the server's own message, kept apart so callers can branch on status
 * and still log what the pod said.
 */
export class GatewayError extends Error {
  override readonly name = "GatewayError";
  readonly status: number;
  readonly error: string;
  /** The URL that answered (or failed). */
  readonly url: string;
  /**
   * The parsed JSON body of the answer, if there was one (a 421 names the owner there: see
   * {@link MisdirectedBody}).
   */
  readonly body: unknown;

  constructor(status: number, error: string, url: string, body?: unknown, options?: ErrorOptions) {
    super(status === 0 ? `${url}: ${error}` : `${status} from ${url}: ${error}`, options);
    this.status = status;
    this.error = error;
    this.url = url;
    this.body = body;
  }
}

/** Options of a {@link GatewayClient}. */
export interface GatewayClientOptions extends OwnerUrlOptions {
  /** The deployment's API_TOKEN. */
  token: string;
  /** Replaces the global fetch (tests, proxies, instrumentation). */
  fetch?: typeof fetch;
  /**
   * Milliseconds a request may take before it is abandoned. Defaults to 15000, above the pods'
   * own query timeout (5 s by default) so that their 504 arrives first.
   */
  timeoutMs?: number;
}

interface Answer {
  status: number;
  url: string;
  body: unknown;
}

/**
 * Talks to a sharded guild-gateway deployment as if it were one database: each guild's
 * requests go to its owner.
 */
export class GatewayClient {
  readonly pods: number;
  readonly strategy: ShardStrategy;
  /** The Discord shard count used for ownership (the default filled in). */
  readonly shards: number;
  readonly podUrlTemplate: string;
  readonly timeoutMs: number;
  /** A guild's settings document (`/v1/guilds/{id}/settings`). */
  readonly settings: {
    /** The document, or null when the guild has no settings row yet. */
    get(guildId: string): Promise<GuildSettings | null>;
    /**
     * Applies a JSON merge patch (RFC 7396: a null value removes the key) and resolves to the
     * committed document; creates the row when absent.
     */
    patch(guildId: string, patch: Record<string, unknown>): Promise<GuildSettings>;
  };

  readonly #template: ParsedTemplate;
  readonly #token: string;
  readonly #fetch: typeof fetch;

  constructor(options: GatewayClientOptions) {
    const { pods, strategy, shards } = checkSharding(options);
    this.pods = pods;
    this.strategy = strategy;
    this.shards = shards;
    this.podUrlTemplate = options.podUrlTemplate;
    this.#template = parseTemplate(options.podUrlTemplate);
    if (typeof options.token !== "string" || options.token === "") {
      throw new TypeError("token is required: the data API refuses requests without API_TOKEN");
    }
    this.#token = options.token;
    // Called as a plain function: a fetch bound to a global refuses to run as a method of this.
    const fetchImpl = options.fetch;
    this.#fetch = (input, init) => (fetchImpl ?? globalThis.fetch)(input, init);
    this.timeoutMs = options.timeoutMs ?? 15_000;
    if (!(this.timeoutMs > 0)) throw new RangeError(`timeoutMs must be positive, not ${this.timeoutMs}`);

    this.settings = {
      get: async (guildId) => {
        const answer = await this.#toOwner(guildId, "GET", "/settings");
        if (answer.status === 404) return null;
        return expectOk(answer) as GuildSettings;
      },
      patch: async (guildId, patch) => {
        if (patch === null || typeof patch !== "object" || Array.isArray(patch)) {
          // Any other JSON value would replace the whole document; the pods refuse it too.
          throw new TypeError("a settings patch is a JSON object (a JSON merge patch)");
        }
        const answer = await this.#toOwner(guildId, "PATCH", "/settings", JSON.stringify(patch));
        return expectOk(answer) as GuildSettings;
      },
    };
  }

  /** The ordinal of the pod this client believes owns a guild. */
  ownerOrdinal(guildId: string): number {
    return ownerOrdinal(guildId, { pods: this.pods, strategy: this.strategy, shards: this.shards });
  }

  /** The base URL of the pod this client believes owns a guild. */
  ownerUrl(guildId: string): string {
    return formatUrl(this.#template, this.ownerOrdinal(guildId));
  }

  /** Runs one read-only statement on the guild's owner. */
  async query(guildId: string, compiled: CompiledQuery): Promise<QueryResult> {
    const answer = await this.#toOwner(guildId, "POST", "/query", encodeQuery(compiled));
    return decodeBlobs(expectOk(answer) as QueryResult);
  }

  /**
   * Runs one write (INSERT, UPDATE or DELETE, with or without RETURNING) on the guild's owner,
   * committed alone before the answer. The owner refuses a statement that touches another
   * guild's rows or a table that is not a guild's (403), a constraint violation is a 409, and
   * a guild frozen by a rescale a 503. A write that got no answer (status 0: a timeout, a
   * connection lost) may or may not have been committed.
   */
  async execute(guildId: string, compiled: CompiledQuery): Promise<ExecuteResult> {
    const answer = await this.#toOwner(guildId, "POST", "/execute", encodeQuery(compiled));
    return decodeBlobs(expectOk(answer) as ExecuteResult);
  }

  /**
   * A Kysely instance over one guild's owner: reads go to `/query`, writes to `/execute`,
   * each statement on its own (no transactions). Cheap to make: it holds no connection.
   * `config` takes Kysely's other options (plugins, log).
   */
  db<DB>(guildId: string, config?: GatewayKyselyConfig): Kysely<DB> {
    return guildKysely<DB>(this, guildId, config);
  }

  /**
   * A read-only Kysely instance over the owners of several guilds (`POST /v1/query`): each
   * owner runs the statement on its own file and the rows are concatenated, so an aggregate
   * across guilds comes back once per pod unless it groups by guild_id. Writes are refused
   * before any request.
   */
  crossGuildDb<DB>(guildIds: readonly string[], config?: GatewayKyselyConfig): Kysely<DB> {
    return crossGuildKysely<DB>(this, guildIds, config);
  }

  /**
   * Runs one statement on the owners of several guilds and merges their rows. Each pod holds
   * only its own guilds, so an aggregate across guilds must group by guild_id: a bare
   * `count(*)` would come back as one row per pod. Rows come in no particular order across pods.
   */
  async queryGuilds(guildIds: readonly string[], compiled: CompiledQuery): Promise<GuildsQueryResult> {
    const first = guildIds[0];
    if (first === undefined) throw new TypeError("queryGuilds needs at least one guild id");
    // Any pod fans out; the first guild's owner saves a hop when all guilds share it.
    const url = `${this.ownerUrl(first)}/v1/query`;
    const body = encodeQuery(compiled, guildIds);
    return decodeBlobs(expectOk(await this.#send("POST", url, body)) as GuildsQueryResult);
  }

  /**
   * Sends to the owner computed here; a 421 means the pods count differently (a resharding in
   * progress or a stale config), and its `url` is followed once. A second 421 is an error
   * rather than a loop.
   */
  async #toOwner(guildId: string, method: string, suffix: string, body?: string): Promise<Answer> {
    const path = `/v1/guilds/${encodeURIComponent(guildId)}${suffix}`;
    const answer = await this.#send(method, this.ownerUrl(guildId) + path, body);
    const owner = misdirectedTo(answer);
    if (owner === undefined) return answer;
    return this.#send(method, owner + path, body);
  }

  async #send(method: string, url: string, body?: string): Promise<Answer> {
    const headers: Record<string, string> = {
      authorization: `Bearer ${this.#token}`,
      accept: "application/json",
    };
    if (body !== undefined) headers["content-type"] = "application/json";
    let response: Response;
    let text: string;
    try {
      response = await this.#fetch(url, {
        method,
        headers,
        ...(body === undefined ? {} : { body }),
        signal: AbortSignal.timeout(this.timeoutMs),
      });
      text = await response.text();
    } catch (cause) {
      const why =
        cause instanceof Error && (cause.name === "TimeoutError" || cause.name === "AbortError")
          ? `no answer within ${this.timeoutMs} ms`
          : `request failed: ${describe(cause)}`;
      throw new GatewayError(0, why, url, undefined, { cause });
    }
    if (text === "") return { status: response.status, url, body: undefined };
    try {
      return { status: response.status, url, body: JSON.parse(text) as unknown };
    } catch {
      // A proxy's HTML error page, say: its text is the best message there is.
      return { status: response.status, url, body: text };
    }
  }
}

/** Turns each `{"$blob": base64}` value of an answer into the bytes it carries, in place. */
export function decodeBlobs<T extends QueryResult>(result: T): T {
  for (const row of result.rows) {
    for (let i = 0; i < row.length; i++) {
      const value = row[i];
      if (isRecord(value) && typeof value["$blob"] === "string" && Object.keys(value).length === 1) {
        row[i] = new Uint8Array(Buffer.from(value["$blob"], "base64"));
      }
    }
  }
  return result;
}

/** The owner URL named by a 421 answer, if that is what it is. */
function misdirectedTo(answer: Answer): string | undefined {
  if (answer.status !== 421) return undefined;
  const url = isRecord(answer.body) ? answer.body["url"] : undefined;
  return typeof url === "string" && /^https?:\/\//.test(url) ? url.replace(/\/+$/, "") : undefined;
}

function expectOk(answer: Answer): unknown {
  const { status, body } = answer;
  const ok = status >= 200 && status < 300;
  if (ok && isRecord(body)) return body;
  let message: string;
  if (isRecord(body) && typeof body["error"] === "string") {
    message = body["error"];
  } else if (ok) {
    message = `the answer is not a JSON object${typeof body === "string" ? `: ${body.slice(0, 200)}` : ""}`;
  } else if (typeof body === "string" && body !== "") {
    message = body.slice(0, 500);
  } else {
    message = `HTTP ${status}`;
  }
  throw new GatewayError(status, message, answer.url, body);
}

/**
 * The request body, written by hand so that bigint parameters travel as exact JSON integers
 * (JSON.stringify refuses them) and Kysely's extra fields (`query`, `queryId`) stay behind.
 */
function encodeQuery(compiled: CompiledQuery, guilds?: readonly string[]): string {
  if (typeof compiled?.sql !== "string") throw new TypeError("compiled.sql must be a string");
  const parameters = compiled.parameters ?? [];
  if (!Array.isArray(parameters)) throw new TypeError("compiled.parameters must be an array");
  const fields: string[] = [];
  if (guilds !== undefined) fields.push(`"guilds":${JSON.stringify(guilds.map(String))}`);
  fields.push(`"sql":${JSON.stringify(compiled.sql)}`);
  fields.push(`"parameters":[${parameters.map(encodeParameter).join(",")}]`);
  return `{${fields.join(",")}}`;
}

function encodeParameter(value: unknown): string {
  if (typeof value === "bigint") return value.toString();
  // undefined (and functions) become null, as in a JSON array.
  return JSON.stringify(value) ?? "null";
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function describe(error: unknown): string {
  if (!(error instanceof Error)) return String(error);
  // fetch wraps the socket error ("fetch failed"); its cause says what happened.
  const cause = error.cause instanceof Error ? `: ${error.cause.message}` : "";
  return `${error.message}${cause}`;
}

/**
 * `{columns, rows}` as row objects keyed by column name: what Kysely code expects from a
 * driver's `executeQuery`. Of a repeated column name, the last value is kept.
 */
export function toObjects(result: QueryResult): Record<string, unknown>[] {
  const { columns, rows } = result;
  // fromEntries defines own properties, so even a column named __proto__ stays a plain value.
  return rows.map((row) => Object.fromEntries(columns.map((column, i) => [column, row[i]])));
}
