"""`python -m sandbox.image.mapped_unpack STORE IMAGE_ID`: unpack an image's layers keeping the
image's owners.  Run by sandbox.runtime.image_root inside a user namespace whose maps cover
the ids the image uses (a subuid range); errors go to stderr as one line."""
import sys

from sandbox.errors import SandboxError


def main(argv):
    from sandbox.image.store import Store
    from sandbox.image.unpack import MappedOwnership
    store_root, image_id = argv
    store = Store(store_root)
    store.unpack(store.get(image_id), owner=MappedOwnership(),
                 warn=lambda m: sys.stderr.write(f"warning: {m}\n"))


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except SandboxError as e:
        sys.stderr.write(f"sbx: {e}\n")
        sys.exit(125)
