-- The operators' actions through the admin API, with who took each (the admin token's name):
-- the audit trail. One row per ref: a retried write is a no-op. Bans, drains, the fee and the
-- sample rate are rebuilt from the newest row per node or setting when the coordinator starts.
create table if not exists admin_actions (
  id        bigserial primary key,
  ref       text not null unique,
  who       text not null,
  action    text not null check (action in ('drain', 'undrain', 'ban', 'unban', 'fee', 'sample_rate', 'deposit')),
  target    text not null,           -- a node key, a ledger account, or '' for a setting
  value     bigint not null,         -- fee: basis points; sample_rate: parts per million; deposit: micro-units
  taken_at  timestamptz not null
);
create index if not exists admin_actions_target on admin_actions (action, target, id);
