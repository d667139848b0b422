/**
 * A Kysely dialect whose "database" is a guild-gateway deployment.
 *
 * The bot's query code keeps building statements with Kysely; this driver sends each compiled
 * statement to the pod that owns the guild: reads to `POST /v1/guilds/{id}/query`, writes to
 * `POST /v1/guilds/{id}/execute`. A cross-guild handle sends reads to `POST /v1/query`.
 *
 * Read or write is decided from the root node Kysely compiled, not from the SQL text:
 *
 * - `SelectQueryNode` (a `WITH ... SELECT` included) is a read;
 * - `InsertQueryNode`, `UpdateQueryNode`, `DeleteQueryNode` (with or without RETURNING, with or
 *   without a leading WITH) are writes;
 * - a `RawNode` (`sql\`...\``, `CompiledQuery.raw`) has no kind of its own, so its text decides:
 *   a read if its first keyword (after comments and opening parentheses) is SELECT or WITH,
 *   a write otherwise. A raw `WITH ... INSERT` therefore goes to /query, which refuses it:
 *   build such a write with `db.with(...).insertInto(...)`, which compiles to an insert node;
 * - anything else (schema statements, MERGE) goes to /execute, where the pod refuses it.
 *
 * No transactions: the pods run each write alone, in its own transaction, committed before it
 * answers. `beginTransaction` throws {@link GatewayUnsupportedError}.
 *
 * kysely is a peer dependency: the caller's copy is the one used.
 */

import {
  Kysely,
  SqliteAdapter,
  SqliteIntrospector,
  SqliteQueryCompiler,
  type CompiledQuery,
  type DatabaseConnection,
  type DatabaseIntrospector,
  type Dialect,
  type DialectAdapter,
  type Driver,
  type KyselyConfig,
  type QueryCompiler,
  type QueryResult as KyselyQueryResult,
} from "kysely";
// A cycle with index.ts, harmless: toObjects is only called, never used while modules load.
import { toObjects, type CompiledQuery as Statement, type ExecuteResult, type GuildsQueryResult, type QueryResult } from "./index.js";

/**
 * A statement the gateway cannot run through this driver, refused before any request: a
 * transaction, or a write through a cross-guild (read-only) handle.
 */
export class GatewayUnsupportedError extends Error {
  override readonly name = "GatewayUnsupportedError";
}

/** What the driver needs of a {@link GatewayClient}: its three statement calls. */
export interface GatewayStatements {
  query(guildId: string, compiled: Statement): Promise<QueryResult>;
  execute(guildId: string, compiled: Statement): Promise<ExecuteResult>;
  queryGuilds(guildIds: readonly string[], compiled: Statement): Promise<GuildsQueryResult>;
}

/** Where a dialect sends its statements: one guild's owner, or the owners of several guilds. */
export type GatewayTarget =
  | { readonly guildId: string }
  | { readonly guildIds: readonly string[] };

export interface GatewayDialectConfig {
  client: GatewayStatements;
  target: GatewayTarget;
}

/** How a compiled statement travels. */
export type StatementRoute = "read" | "write";

const WRITE_NODES = new Set(["InsertQueryNode", "UpdateQueryNode", "DeleteQueryNode", "MergeQueryNode"]);

/**
 * Read or write, from the compiled statement's root node (see the module comment for the rule
 * on raw SQL).
 */
export function statementRoute(compiled: Pick<CompiledQuery, "query" | "sql">): StatementRoute {
  const kind = compiled.query?.kind;
  if (kind === "SelectQueryNode") return "read";
  if (kind !== undefined && WRITE_NODES.has(kind)) return "write";
  if (kind === "RawNode" || kind === undefined) {
    const keyword = firstKeyword(compiled.sql);
    return keyword === "select" || keyword === "with" ? "read" : "write";
  }
  // Schema statements and the like: the pod's /execute refuses them with its own reason.
  return "write";
}

/** The first keyword of a statement, lower case, past whitespace, comments and "(". */
export function firstKeyword(sql: string): string {
  let i = 0;
  while (i < sql.length) {
    const c = sql[i]!;
    if (c === "(" || /\s/.test(c)) {
      i++;
    } else if (sql.startsWith("--", i)) {
      const end = sql.indexOf("\n", i);
      i = end < 0 ? sql.length : end + 1;
    } else if (sql.startsWith("/*", i)) {
      const end = sql.indexOf("*/", i + 2);
      i = end < 0 ? sql.length : end + 2;
    } else {
      break;
    }
  }
  const match = /^[A-Za-z_]+/.exec(sql.slice(i));
  return match ? match[0].toLowerCase() : "";
}

/** Whether a write statement inserts (so that its last_insert_rowid means something). */
function isInsert(compiled: CompiledQuery): boolean {
  const kind = compiled.query?.kind;
  if (kind === "InsertQueryNode") return true;
  if (kind === "RawNode") {
    const keyword = firstKeyword(compiled.sql);
    return keyword === "insert" || keyword === "replace";
  }
  return false;
}

/**
 * The dialect: SQLite's adapter, compiler and introspector (the pods run SQLite), and a driver
 * that talks HTTP to the pods.
 */
export class GatewayDialect implements Dialect {
  readonly #config: GatewayDialectConfig;

  constructor(config: GatewayDialectConfig) {
    const { target } = config;
    if ("guildIds" in target) {
      if (!Array.isArray(target.guildIds) || target.guildIds.length === 0) {
        throw new TypeError("a cross-guild handle needs at least one guild id");
      }
    } else if (typeof target.guildId !== "string" || target.guildId === "") {
      throw new TypeError("a guild handle needs a guild id");
    }
    this.#config = config;
  }

  createAdapter(): DialectAdapter {
    return new SqliteAdapter();
  }

  createDriver(): Driver {
    return new GatewayDriver(this.#config);
  }

  createQueryCompiler(): QueryCompiler {
    return new SqliteQueryCompiler();
  }

  createIntrospector(db: Kysely<any>): DatabaseIntrospector {
    return new SqliteIntrospector(db);
  }
}

const NO_TRANSACTIONS =
  "guild-gateway runs no transactions: each statement is committed alone by the guild's owner " +
  "before it answers (the bot's writes are single statements); send the statements one by one";

class GatewayDriver implements Driver {
  readonly #connection: GatewayConnection;

  constructor(config: GatewayDialectConfig) {
    this.#connection = new GatewayConnection(config);
  }

  async init(): Promise<void> {}

  async acquireConnection(): Promise<DatabaseConnection> {
    // Stateless: every statement is its own HTTP request, so one connection serves all.
    return this.#connection;
  }

  async beginTransaction(): Promise<void> {
    throw new GatewayUnsupportedError(NO_TRANSACTIONS);
  }

  async commitTransaction(): Promise<void> {
    throw new GatewayUnsupportedError(NO_TRANSACTIONS);
  }

  async rollbackTransaction(): Promise<void> {
    throw new GatewayUnsupportedError(NO_TRANSACTIONS);
  }

  async releaseConnection(): Promise<void> {}

  async destroy(): Promise<void> {}
}

class GatewayConnection implements DatabaseConnection {
  readonly #client: GatewayStatements;
  readonly #target: GatewayTarget;

  constructor(config: GatewayDialectConfig) {
    this.#client = config.client;
    this.#target = config.target;
  }

  async executeQuery<R>(compiled: CompiledQuery): Promise<KyselyQueryResult<R>> {
    const statement = { sql: compiled.sql, parameters: compiled.parameters };
    const route = statementRoute(compiled);
    if ("guildIds" in this.#target) {
      if (route === "write") {
        throw new GatewayUnsupportedError(
          "a cross-guild handle is read-only: write through the guild's own handle, gateway.db(guildId)",
        );
      }
      const result = await this.#client.queryGuilds(this.#target.guildIds, statement);
      return { rows: toObjects(result) as R[] };
    }
    const { guildId } = this.#target;
    if (route === "read") {
      return { rows: toObjects(await this.#client.query(guildId, statement)) as R[] };
    }
    const result = await this.#client.execute(guildId, statement);
    const insertId = isInsert(compiled) ? toBigInt(result.last_insert_rowid) : undefined;
    return {
      rows: toObjects(result) as R[],
      numAffectedRows: toBigInt(result.rows_affected) ?? 0n,
      ...(insertId === undefined ? {} : { insertId }),
    };
  }

  /** The whole answer as one chunk: the pods send a statement's rows in one body. */
  async *streamQuery<R>(compiled: CompiledQuery): AsyncIterableIterator<KyselyQueryResult<R>> {
    yield await this.executeQuery<R>(compiled);
  }
}

function toBigInt(value: unknown): bigint | undefined {
  return typeof value === "number" && Number.isInteger(value) ? BigInt(value) : undefined;
}

/** Options of a gateway-backed Kysely instance: Kysely's own, less the dialect. */
export type GatewayKyselyConfig = Omit<KyselyConfig, "dialect">;

/** A Kysely instance over one guild's owner. */
export function guildKysely<DB>(client: GatewayStatements, guildId: string, config: GatewayKyselyConfig = {}): Kysely<DB> {
  return new Kysely<DB>({ ...config, dialect: new GatewayDialect({ client, target: { guildId } }) });
}

/** A read-only Kysely instance over the owners of several guilds. */
export function crossGuildKysely<DB>(
  client: GatewayStatements,
  guildIds: readonly string[],
  config: GatewayKyselyConfig = {},
): Kysely<DB> {
  return new Kysely<DB>({ ...config, dialect: new GatewayDialect({ client, target: { guildIds: [...guildIds] } }) });
}
