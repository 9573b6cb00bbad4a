-- haca system of record. Money is integer micro-units (bigint); hashes are lowercase hex.

-- One row per job; `state` is the latest state, job_events holds every transition.
create table jobs (
  id              bigint primary key,
  client_id       text        not null,
  client_req_id   text        not null,
  model_hash      text        not null,
  input_hash      text        not null,
  input           bytea       not null,   -- kept so a lost job can be re-run and verified
  input_shape     text        not null,
  tier            text        not null,
  max_price       bigint      not null check (max_price >= 0),
  deadline        timestamptz,
  state           text        not null,
  attempt         int         not null default 0,
  provider_key    text,
  submitted_at    timestamptz not null,
  updated_at      timestamptz not null,
  unique (client_id, client_req_id)
);
create sequence job_id_seq;
create index jobs_state on jobs (state);

create table job_events (
  id        bigserial primary key,
  job_id    bigint      not null references jobs (id),
  state     text        not null,
  detail    text        not null default '',
  at        timestamptz not null
);
create index job_events_job on job_events (job_id);

create table providers (
  public_key   text primary key,
  role         text        not null,  -- provider | verifier
  name         text        not null,
  device       text        not null,
  price        bigint      not null,
  capabilities jsonb       not null,
  first_seen   timestamptz not null default now(),
  last_seen    timestamptz not null default now()
);

-- Signed receipts: one per executed attempt that the coordinator accepted.
create table receipts (
  job_id        bigint primary key references jobs (id),
  receipt_hash  text        not null unique,
  model_hash    text        not null,
  input_hash    text        not null,
  output_hash   text        not null,
  trace_root    text        not null,
  provider_key  text        not null,
  price         bigint      not null,
  attempt       int         not null,
  started_at    bigint      not null,   -- unix microseconds, as signed
  finished_at   bigint      not null,
  signature     text        not null,
  verdict       text,                   -- verified | mismatch | unsampled
  block_height  bigint,
  block_index   int,                    -- position in its block's Merkle batch
  unique (block_height, block_index)
);

create table blocks (
  height        bigint primary key,
  prev_hash     text        not null,
  batch_root    text        not null,
  receipts      int         not null,
  total_amount  bigint      not null,
  block_hash    text        not null unique,
  signer_key    text        not null,
  signature     text        not null,
  created_at    bigint      not null    -- unix microseconds, as signed
);

create table accounts (
  id       text primary key,   -- e.g. client:alice, provider:<key>:earnings, protocol:fees, mint
  balance  bigint not null default 0
);

-- Double entry: the postings of one receipt (or one funding) sum to zero.
create table postings (
  id            bigserial primary key,
  block_height  bigint references blocks (height),
  job_id        bigint references jobs (id),
  account       text   not null references accounts (id),
  amount        bigint not null,
  memo          text   not null,
  at            timestamptz not null default now()
);
create index postings_block on postings (block_height);
