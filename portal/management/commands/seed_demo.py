from typing import Any

from django.core.management.base import BaseCommand

from tenants.services import demo_seed


class Command(BaseCommand):
    help = "Create the demo department and an admin user (the password is printed once, at creation)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--username", default="admin")

    def handle(self, *args: Any, **opts: Any) -> None:
        tenant, password = demo_seed(username=opts["username"])
        if password:
            line = f"Admin user created — username: {opts['username']}  password: {password}  (shown once)"
            self.stdout.write(self.style.WARNING(line))
        else:
            self.stdout.write(f"Demo department '{tenant.slug}' and user '{opts['username']}' already exist")
