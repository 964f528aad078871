"""The gRPC API from a client nobody on the team wrote: Python grpcio with stubs generated from
proto/ at test time, against the real `patron` binary on a temporary SQLite database.

Run with `make python-e2e` (creates target/venv-e2e, installs requirements.txt, builds patron).
PATRON_BIN overrides the binary (default: target/debug/patron).
"""

import glob
import importlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import unittest

import grpc
import grpc_tools
from grpc_tools import protoc

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PROTO = os.path.join(ROOT, "proto")
EVENTS = os.path.join(ROOT, "examples", "events.jsonl")
TOKEN = "e2e-token"


def generate_stubs(out):
    """Compiles every proto under proto/ into `out` and puts it on the import path."""
    files = sorted(os.path.relpath(p, PROTO) for p in glob.glob(os.path.join(PROTO, "**", "*.proto"), recursive=True))
    os.makedirs(out, exist_ok=True)
    well_known = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    args = ["protoc", f"-I{PROTO}", f"-I{well_known}", f"--python_out={out}", f"--grpc_python_out={out}", *files]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed: {args}")
    sys.path.insert(0, out)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PatronApi(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="patron-e2e-")
        generate_stubs(os.path.join(cls.tmp, "stubs"))
        cls.pb = importlib.import_module("patron.api.v1.customers_service_pb2")
        cls.rpc = importlib.import_module("patron.api.v1.customers_service_pb2_grpc")
        cls.kpi_pb = importlib.import_module("patron.api.v1.kpi_service_pb2")
        cls.kpi_rpc = importlib.import_module("patron.api.v1.kpi_service_pb2_grpc")
        cls.stage = importlib.import_module("patron.lifecycle.v1.lifecycle_pb2").Stage
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        cls.health_pb, cls.health_rpc = health_pb2, health_pb2_grpc

        binary = os.environ.get("PATRON_BIN", os.path.join(ROOT, "target", "debug", "patron"))
        env = dict(os.environ, PATRON_DATABASE_URL=f"sqlite://{cls.tmp}/patron.db", PATRON_LOG="warn")
        # The example file is in EUR; the default rules report in USD.
        rules = os.path.join(cls.tmp, "rules.toml")
        with open(rules, "w") as out:
            out.write('currency = "EUR"\n')
        for command in (["migrate"], ["import", EVENTS], ["rebuild", "--rules", rules]):
            subprocess.run([binary, *command], env=env, check=True, timeout=120, stdin=subprocess.DEVNULL)
        cls.address = f"127.0.0.1:{free_port()}"
        cls.server = subprocess.Popen(
            [binary, "api", "--api-listen", cls.address, "--api-token", TOKEN], env=env, stdin=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 60
        # Wait for the port first: a gRPC channel that failed to connect backs off for seconds.
        while True:
            try:
                socket.create_connection(("127.0.0.1", int(cls.address.rsplit(":", 1)[1])), timeout=1).close()
                break
            except OSError:
                if cls.server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"patron api did not listen (exit {cls.server.poll()})")
                time.sleep(0.05)
        cls.channel = grpc.insecure_channel(cls.address)
        health = cls.health_rpc.HealthStub(cls.channel)
        while True:
            try:
                answer = health.Check(cls.health_pb.HealthCheckRequest(service=""), timeout=2)
                if answer.status == cls.health_pb.HealthCheckResponse.SERVING:
                    break
            except grpc.RpcError:
                pass
            if cls.server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"patron api did not become healthy (exit {cls.server.poll()})")
            time.sleep(0.2)

        cls.subjects = set()
        cls.buyers = set()
        cls.last_day = ""
        with open(EVENTS) as lines:
            for line in lines:
                event = json.loads(line)
                cls.subjects.add(event["subject"])
                cls.last_day = max(cls.last_day, event["time"][:10])
                if event["type"] == "patron.purchase.v1":
                    cls.buyers.add(event["subject"])

    @classmethod
    def tearDownClass(cls):
        cls.channel.close()
        cls.server.terminate()
        cls.server.wait(timeout=30)
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def auth(self):
        return (("authorization", f"Bearer {TOKEN}"),)

    def test_get_customer(self):
        stub = self.rpc.CustomerServiceStub(self.channel)
        customer_id = sorted(self.buyers)[0]
        answer = stub.GetCustomer(self.pb.GetCustomerRequest(customer_id=customer_id), metadata=self.auth(), timeout=10)
        customer = answer.customer
        self.assertEqual(customer.customer_id, customer_id)
        self.assertNotEqual(customer.stage, self.stage.Value("STAGE_UNSPECIFIED"))
        self.assertGreater(customer.value.orders, 0, "a buyer has orders")
        self.assertEqual(customer.value.currency, "EUR")
        self.assertGreater(len(customer.stage_history), 0)
        self.assertEqual(customer.stage_history[-1].to_stage, customer.stage)

        with self.assertRaises(grpc.RpcError) as missing:
            stub.GetCustomer(self.pb.GetCustomerRequest(customer_id="nobody"), metadata=self.auth(), timeout=10)
        self.assertEqual(missing.exception.code(), grpc.StatusCode.NOT_FOUND)

    def test_reflection_describes_every_service(self):
        """What grpcurl does with no proto files: list the services, then resolve a method's
        request and response types from the descriptors the server sends."""
        from google.protobuf import descriptor_pool
        from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
            ProtoReflectionDescriptorDatabase,
        )

        database = ProtoReflectionDescriptorDatabase(self.channel)
        services = set(database.get_services())
        for service in (
            "patron.api.v1.CustomerService",
            "patron.api.v1.KpiService",
            "patron.api.v1.EventStoreService",
            "grpc.health.v1.Health",
        ):
            self.assertIn(service, services)
        pool = descriptor_pool.DescriptorPool(database)
        method = pool.FindMethodByName("patron.api.v1.CustomerService.GetCustomer")
        self.assertEqual(method.input_type.full_name, "patron.api.v1.GetCustomerRequest")
        self.assertIn("customer_id", method.input_type.fields_by_name)
        self.assertEqual(method.output_type.full_name, "patron.api.v1.GetCustomerResponse")
        watch = pool.FindMethodByName("patron.api.v1.CustomerService.WatchLifecycleChanges")
        self.assertTrue(watch.server_streaming)

    def test_list_customers_in_pages(self):
        stub = self.rpc.CustomerServiceStub(self.channel)
        request = self.pb.ListCustomersRequest(page_size=4)
        seen, pages = [], 0
        while True:
            page = stub.ListCustomers(request, metadata=self.auth(), timeout=10)
            pages += 1
            self.assertLessEqual(len(page.customers), 4)
            seen.extend(c.customer_id for c in page.customers)
            if not page.next_page_token:
                break
            request.page_token = page.next_page_token
        self.assertEqual(len(seen), len(set(seen)), "no customer twice")
        self.assertEqual(set(seen), self.subjects, "every customer of the example file")
        self.assertGreaterEqual(pages, 4)

        with self.assertRaises(grpc.RpcError) as bad:
            stub.ListCustomers(self.pb.ListCustomersRequest(page_size=501), metadata=self.auth(), timeout=10)
        self.assertEqual(bad.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
        self.assertTrue(bad.exception.details().startswith("page_size:"), bad.exception.details())

    def test_unauthenticated(self):
        stub = self.rpc.CustomerServiceStub(self.channel)
        for metadata in ((), (("authorization", "Bearer wrong"),)):
            with self.assertRaises(grpc.RpcError) as refused:
                stub.ListCustomers(self.pb.ListCustomersRequest(), metadata=metadata, timeout=10)
            self.assertEqual(refused.exception.code(), grpc.StatusCode.UNAUTHENTICATED)

    def test_health_needs_no_token(self):
        health = self.health_rpc.HealthStub(self.channel)
        for service in ("", "patron.api.v1.CustomerService"):
            answer = health.Check(self.health_pb.HealthCheckRequest(service=service), timeout=10)
            self.assertEqual(answer.status, self.health_pb.HealthCheckResponse.SERVING, service)

    def test_kpis(self):
        stub = self.kpi_rpc.KpiServiceStub(self.channel)
        answer = stub.StageDistribution(
            self.kpi_pb.DayRangeRequest(from_day=self.last_day, to_day=self.last_day), metadata=self.auth(), timeout=10
        )
        self.assertEqual(len(answer.days), 1)
        total = sum(s.count for s in answer.days[0].stages)
        self.assertEqual(total, len(self.subjects), "every customer is in one stage on the last day")

        month = self.last_day[:7]
        five_years_before = f"{int(month[:4]) - 5}{month[4:]}"
        cohorts = stub.CohortRetention(
            self.kpi_pb.MonthRangeRequest(from_month=five_years_before, to_month=month), metadata=self.auth(), timeout=10
        )
        self.assertEqual(sum(c.size for c in cohorts.cohorts), len(self.buyers), "every buyer in one cohort")

        with self.assertRaises(grpc.RpcError) as bad:
            stub.Nps(self.kpi_pb.MonthRangeRequest(from_month="2025-13", to_month=month), metadata=self.auth(), timeout=10)
        self.assertEqual(bad.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
        self.assertEqual(bad.exception.details(), 'from_month: expected YYYY-MM, got "2025-13"')


if __name__ == "__main__":
    unittest.main(verbosity=2)
