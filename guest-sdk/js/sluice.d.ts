// Types for the Sluice module helpers (sluice.js), for TypeScript modules:
// `import { state, emit, Reject, type SluiceEvent } from "sluice";`

/** One event as a handler gets it: CloudEvents attributes, payload, position. */
export interface SluiceEvent {
  id: string;
  source: string;
  type: string;
  subject?: string;
  time?: string;
  datacontenttype?: string;
  dataschema?: string;
  data: Uint8Array;
  key?: Uint8Array;
  /** The key as UTF-8 text. */
  keyString?: string;
  headers: [string, Uint8Array][];
  topic: string;
  partition: number;
  offset: bigint;
  /** `data` parsed as JSON; throws `Reject` if it is not JSON. */
  json<T = unknown>(): T;
  /** `data` as UTF-8 text. */
  text(): string;
}

/** A module's entry point: return to commit, throw `Retry` or `Reject` to fail. */
export type Handler = (event: SluiceEvent) => void;

/** A transient failure: the host retries the event in place, with backoff. */
export class Retry extends Error {}
/** A permanent failure: the event goes to the module's dead-letter topic. */
export class Reject extends Error {}

type Bytes = string | Uint8Array;

export const state: {
  get(key: Bytes): Uint8Array | undefined;
  getString(key: Bytes): string | undefined;
  getJson<T = unknown>(key: Bytes): T | undefined;
  set(key: Bytes, value: Bytes): void;
  setJson(key: Bytes, value: unknown): void;
  delete(key: Bytes): void;
  scan(
    prefix: Bytes,
    options?: { startAfter?: Bytes; limit?: number },
  ): { entries: [Uint8Array, Uint8Array][]; next?: Uint8Array };
};

export function emit(
  topic: string,
  type: string,
  options?: {
    key?: Bytes;
    json?: unknown;
    data?: Bytes;
    subject?: string;
    datacontenttype?: string;
    headers?: [string, Bytes][];
  },
): void;

export const config: {
  get(key: string): string | undefined;
  getJson<T = unknown>(key: string): T | undefined;
  all(): [string, string][];
};

export const log: Record<"trace" | "debug" | "info" | "warn" | "error", (message: unknown) => void>;

/** Used by the build: calls `handle` and turns its outcome into the WIT result. */
export function run(handle: Handler, raw: unknown): void;
