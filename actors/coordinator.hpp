#pragma once
// Spawning the coordinator's actors. Each is a thin shell around a core (core/) or a resource
// (Postgres, sockets); app/coordinator.cpp wires them together.
#include <memory>
#include <string>

#include <caf/all.hpp>

#include "actors/messages.hpp"
#include "core/execution.hpp"
#include "core/settlement.hpp"
#include "core/verification.hpp"
#include "db/reader.hpp"
#include "db/store.hpp"

#include "core/referee.hpp"

namespace haca::actors {

caf::actor spawn_store(caf::actor_system& sys, std::shared_ptr<db::store> db);
caf::actor spawn_status_reader(caf::actor_system& sys, std::string url);
caf::actor spawn_job_queue(caf::actor_system& sys, core::execution_core core,
                           std::shared_ptr<inbound_backlog> client_backlog, std::shared_ptr<inbound_backlog> node_backlog);
caf::actor spawn_verifier_pool(caf::actor_system& sys, core::verification_core core,
                               std::shared_ptr<const core::referee> referee, std::shared_ptr<inbound_backlog> backlog);
caf::actor spawn_settlement_batcher(caf::actor_system& sys, core::settlement_core core);

} // namespace haca::actors
