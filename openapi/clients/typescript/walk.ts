// A scheduling system's round trip typed by the generated `schema.d.ts` (openapi-typescript)
// and nothing else: create a plan, read it back, replace it with If-Match (412 when stale),
// ask for a recommendation, create a referral idempotently, list plans with a cursor.
// Run by scripts/contract.sh with TELEMENTAL_URL and TELEMENTAL_TOKEN set.
import type { components, paths } from "./schema";

// Node's globals, declared here rather than pulling in @types/node.
declare const process: { env: Record<string, string | undefined>; exit(code: number): never };

type S = components["schemas"];
type Method = "get" | "post" | "put" | "delete";
/** The JSON body an operation takes. */
type Body<P extends keyof paths, M extends Method> = paths[P][M] extends {
  requestBody: { content: { "application/json": infer B } };
}
  ? B
  : never;
/** What an operation answers with `code`. */
type Answer<P extends keyof paths, M extends Method, C extends number> = paths[P][M] extends {
  responses: { [K in C]: { content: { [T: string]: infer R } } };
}
  ? R
  : never;

const base = process.env.TELEMENTAL_URL ?? "http://127.0.0.1:8080";
const token = process.env.TELEMENTAL_TOKEN ?? "";
const run = Math.random().toString(36).slice(2, 10);

async function call<P extends keyof paths, M extends Method, C extends number>(
  method: M,
  template: P,
  url: string,
  expected: C,
  body?: Body<P, M>,
  headers: Record<string, string> = {},
): Promise<{ body: Answer<P, M, C>; headers: Headers }> {
  const res = await fetch(base + url, {
    method: method.toUpperCase(),
    headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json", ...headers },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  const text = await res.text();
  if (res.status !== expected) {
    throw new Error(`${method} ${template}: expected ${expected}, got ${res.status}: ${text}`);
  }
  return { body: JSON.parse(text) as Answer<P, M, C>, headers: res.headers };
}

function check(ok: boolean, what: string): void {
  if (!ok) throw new Error(`check failed: ${what}`);
}

function planRequest(subject: string): S["PlanRequest"] {
  return {
    subject,
    initial_conversation: { held_on: "2026-11-20", held_by: "Practitioner/9" },
    preferences: { default: ["video", "telephone", "in_person"] },
    resources: { devices: ["smartphone"], connectivity: "reliable", digital_skills: "basic" },
    backup_contact: { method: "telephone", number: "+447700900123" },
  };
}

async function main(): Promise<void> {
  const subject = `Patient/ts-${run}`;
  const created = await call("post", "/v1/plans", "/v1/plans", 201, planRequest(subject));
  const plan: S["Plan"] = created.body;
  check(created.headers.get("etag") === `"${plan.version}"`, "ETag is the version");
  check(created.headers.get("location") === `/v1/plans/${plan.id}`, "Location");

  const read = await call("get", "/v1/plans/{id}", `/v1/plans/${plan.id}`, 200);
  check(JSON.stringify(read.body) === JSON.stringify(plan), "read back as created");
  const etag = read.headers.get("etag") ?? "";

  // A read plan is a valid PUT body as it is: the server's fields are typed as ignored.
  const changed: S["PlanRequest"] = { ...read.body, review_interval_days: 60 };
  const replaced = await call("put", "/v1/plans/{id}", `/v1/plans/${plan.id}`, 200, changed, {
    "If-Match": etag,
  });
  check(replaced.body.version === 2 && replaced.body.review_interval_days === 60, "new version");
  const stale = await call("put", "/v1/plans/{id}", `/v1/plans/${plan.id}`, 412, changed, {
    "If-Match": etag,
  });
  const problem: S["Problem"] = stale.body;
  check(problem.current_version === 2, "412 names the current version");

  const rec = await call("post", "/v1/recommendations", "/v1/recommendations", 200, {
    subject,
    appointment_type: "therapy",
  });
  const modality: S["Modality"] = rec.body.recommended_modality;
  check(rec.body.plan_version === 2 && rec.body.options.length === 4, "recommendation");

  const referral: S["ReferralInput"] = { subject, reason: "not_accessible", urgency: "urgent" };
  const key = { "Idempotency-Key": `ts-${run}` };
  const first = await call("post", "/v1/referrals", "/v1/referrals", 201, referral, key);
  const retry = await call("post", "/v1/referrals", "/v1/referrals", 201, referral, key);
  check(first.body.id === retry.body.id, "one referral for two tries");
  check(retry.headers.get("idempotent-replayed") === "true", "the retry is a replay");
  const status: S["ReferralStatus"] = first.body.status;
  check(status === "requested", "requested");

  for (const n of [0, 1]) {
    await call("post", "/v1/plans", "/v1/plans", 201, planRequest(`${subject}-${n}`));
  }
  const seen: string[] = [];
  let cursor: string | null = null;
  let pages = 0;
  do {
    const query: string = cursor === null ? "" : `&cursor=${encodeURIComponent(cursor)}`;
    const page = await call("get", "/v1/plans", `/v1/plans?limit=2${query}`, 200);
    const list: S["PlanList"] = page.body;
    pages += 1;
    seen.push(...list.items.map((p) => p.subject));
    cursor = list.next_cursor ?? null;
  } while (cursor !== null);
  check(pages >= 2, "more than one page");
  for (const s of [subject, `${subject}-0`, `${subject}-1`]) check(seen.includes(s), `listed ${s}`);

  console.log(`typescript: plan ${plan.id} v2, ${modality}, referral ${first.body.id}, ${pages} pages`);
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
