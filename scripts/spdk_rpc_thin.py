#  SPDX-License-Identifier: BSD-3-Clause
"""dm-thin extras of rust-thin-nvmf for SPDK's own client.

Usage (the module must be importable, e.g. from this folder):

    PYTHONPATH=scripts spdk-rpc -s /tmp/t.sock --plugin spdk_rpc_thin thin_pool_status pool0

spdk-rpc's `--plugin NAME` imports module NAME and calls its
`spdk_rpc_plugin_initialize(subparsers)`; each sub-command below sends the method of the
same name with parameters mirroring its options (docs/rpc.md, "dm-thin extras").
"""

import json


def _print(v):
    if v is not None:  # None: --dry-run
        print(json.dumps(v, indent=2).strip('"'))


def spdk_rpc_plugin_initialize(subparsers):

    def thin_pool_create(args):
        params = {'name': args.name, 'metadata_bdev': args.metadata_bdev,
                  'data_bdev': args.data_bdev}
        if args.data_block_size is not None:
            params['data_block_size'] = args.data_block_size
        if args.format is not None:
            params['format'] = args.format
        if args.force:
            params['force'] = True
        if args.low_water_mark is not None:
            params['low_water_mark'] = args.low_water_mark
        _print(args.client.call('thin_pool_create', params))

    p = subparsers.add_parser(
        'thin_pool_create',
        help='Create (or open) a dm-thin pool on separate metadata and data bdevs')
    p.add_argument('name', help='Pool name (used as the lvstore name: bdev_lvol_create -l NAME)')
    p.add_argument('metadata_bdev',
                   help='Unclaimed bdev holding the dm-thin metadata (whole bdev)')
    p.add_argument('data_bdev', help='Unclaimed bdev holding the data blocks (whole bdev)')
    p.add_argument('-b', '--data-block-size', type=int,
                   help='Data block size in 512-byte sectors: a multiple of 128, at most 2097152 '
                        '(default 128 when formatting; the metadata decides when opening)')
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument('--format', dest='format', action='store_true', default=None,
                     help='Format the metadata bdev '
                          '(refused over valid dm-thin metadata without --force)')
    fmt.add_argument('--no-format', dest='format', action='store_false',
                     help='Only open existing dm-thin metadata')
    p.add_argument('--force', action='store_true',
                   help='Allow --format over valid dm-thin metadata')
    p.add_argument('-l', '--low-water-mark', type=int, help='Low-water mark in free data blocks')
    p.set_defaults(func=thin_pool_create)

    def thin_pool_status(args):
        _print(args.client.call('thin_pool_status', {'pool': args.pool}))

    p = subparsers.add_parser('thin_pool_status',
                              help="A pool's dm-thin status (dmsetup status fields)")
    p.add_argument('pool', help='Pool (lvstore) name or UUID')
    p.set_defaults(func=thin_pool_status)

    def thin_pool_reserve_metadata_snap(args):
        _print(args.client.call('thin_pool_reserve_metadata_snap', {'pool': args.pool}))

    p = subparsers.add_parser('thin_pool_reserve_metadata_snap',
                              help='Hold a metadata snapshot (prints its block)')
    p.add_argument('pool', help='Pool (lvstore) name or UUID')
    p.set_defaults(func=thin_pool_reserve_metadata_snap)

    def thin_pool_release_metadata_snap(args):
        _print(args.client.call('thin_pool_release_metadata_snap', {'pool': args.pool}))

    p = subparsers.add_parser('thin_pool_release_metadata_snap',
                              help='Release the held metadata snapshot')
    p.add_argument('pool', help='Pool (lvstore) name or UUID')
    p.set_defaults(func=thin_pool_release_metadata_snap)

    def thin_pool_set_transaction_id(args):
        _print(args.client.call('thin_pool_set_transaction_id',
                                {'pool': args.pool, 'old': args.old, 'new': args.new}))

    p = subparsers.add_parser('thin_pool_set_transaction_id',
                              help="Set the pool's transaction id if it is OLD")
    p.add_argument('pool', help='Pool (lvstore) name or UUID')
    p.add_argument('old', type=int, help='Current transaction id')
    p.add_argument('new', type=int, help='New transaction id')
    p.set_defaults(func=thin_pool_set_transaction_id)

    def thin_pool_set_low_water_mark(args):
        _print(args.client.call('thin_pool_set_low_water_mark',
                                {'pool': args.pool, 'blocks': args.blocks}))

    p = subparsers.add_parser('thin_pool_set_low_water_mark',
                              help='Warn once when free data blocks fall to or below BLOCKS '
                                   '(0: off)')
    p.add_argument('pool', help='Pool (lvstore) name or UUID')
    p.add_argument('blocks', type=int, help='Low-water mark in data blocks')
    p.set_defaults(func=thin_pool_set_low_water_mark)

    def thin_delta(args):
        _print(args.client.call('thin_delta', {'pool': args.pool, 'thin1': args.thin1,
                                               'thin2': args.thin2}))

    p = subparsers.add_parser('thin_delta',
                              help='Ranges (in data blocks) where two thin volumes differ')
    p.add_argument('pool', help='Pool (lvstore) name or UUID')
    p.add_argument('thin1', help='Left volume: lvol name, alias or UUID, or dm-thin device id')
    p.add_argument('thin2', help='Right volume: lvol name, alias or UUID, or dm-thin device id')
    p.set_defaults(func=thin_delta)
