"""edgeff keygen: an ed25519 key pair for signing bundles (edgeff bundle/deploy --sign KEY)."""

HELP = "make an ed25519 key pair to sign bundles with; devices then accept only bundles that key signed"


def add_arguments(p):
    p.add_argument("-o", "--output", required=True, metavar="KEYFILE",
                   help="the private key (mode 0600, never overwritten); the public key goes to KEYFILE.pub")


def run(args):
    from ..deploy.signing import keygen

    public = keygen(args.output)
    print(f"wrote {args.output} (private: keep it secret) and {args.output}.pub; public key {public}\n"
          f"the first signed deploy pins it on a device; to pin it beforehand, run there: "
          f"python3 -m edgeff.deploy.install trust --root ROOT --key {public}")
    return 0
