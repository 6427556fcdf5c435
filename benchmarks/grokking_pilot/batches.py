"""Condition batches for pilot.py (each function returns a list of condition dicts)."""


def M(op="add", p=31, d=32, L=2, lr=1e-2, wd=1.0, tf=0.5, bs=128, seed=1, ds=0, steps=6000):
    c = dict(workload=op if op.startswith("multitask") else f"mod_{op}", lr=lr, weight_decay=wd,
             batch_size=bs, seed=seed, max_steps=steps, task={"p": p, "train_frac": tf},
             model={"d_model": d, "d_ff": 2 * d, "n_layers": L})
    if ds:
        c["data_seed"] = ds
    return c


def anchors():
    return [
        M(seed=1), M(seed=2),                       # smoke point
        M(wd=0.0, seed=1, steps=3000),              # smoke control
        M(lr=3e-3, bs=512, seed=1),                 # task example
        M(lr=3e-3, bs=128, seed=1),
    ]


def grid1():
    return [
        M(lr=3e-3, wd=1.0, tf=0.6), M(lr=3e-3, wd=1.0, tf=0.7),
        M(lr=3e-3, wd=3.0, tf=0.5), M(lr=3e-3, wd=3.0, tf=0.6),
        M(lr=1e-2, wd=0.3), M(lr=1e-2, wd=0.1),
        M(lr=3e-3, wd=1.0, bs=64),
        M(p=59, d=64, lr=3e-3, wd=1.0),
    ]


def grid2():
    return [
        M(d=64, lr=1e-3, wd=1.0), M(d=64, lr=3e-3, wd=1.0), M(d=64, lr=3e-3, wd=0.3),
        M(d=64, lr=1e-2, wd=0.3), M(d=64, lr=3e-3, wd=1.0, tf=0.6), M(d=64, L=1, lr=3e-3, wd=1.0),
        M(p=47, d=64, lr=3e-3, wd=1.0), M(p=47, d=64, lr=1e-2, wd=0.3),
        M(L=1, lr=1e-2, wd=0.3), M(lr=1e-2, wd=0.3, tf=0.6),
    ]


A = dict(d=64, lr=3e-3, wd=1.0, tf=0.6)          # candidate positive family (p31)
D1 = dict(d=32, L=1, lr=1e-2, wd=0.3, tf=0.5)     # cheap candidate


def grid3():
    return [
        M(**A, seed=2), M(**A, seed=3), M(**A, seed=1, ds=1),
        M(**D1, seed=2), M(**D1, seed=1, ds=1),
        M(lr=1e-2, wd=0.3, seed=2),
        M(op="sub", **A), M(op="mul", **A), M(op="sq", **A), M(op="multitask_2", **A),
        M(**{**A, "tf": 0.7}), M(**{**A, "tf": 0.4}),
    ]


def neg1():
    return [
        M(op="sq_cross", **A), M(op="cube", **A),
        M(**{**A, "tf": 0.3}), M(**{**A, "wd": 0.03}), M(**{**A, "wd": 0.0}),
        M(**{**A, "lr": 1e-3}),
    ]


def grid4():
    return [
        M(op="sub", **A, seed=2), M(op="mul", **A, seed=2), M(op="sq", **A, seed=2),
        M(**{**A, "tf": 0.7}, seed=2), M(**A, p=47), M(**A, p=23),
        M(op="multitask_2", **{**A, "tf": 0.7}), M(**{**A, "d": 32}, seed=2),
    ]


def neg2():
    return [
        M(op="sq_cross", **A, seed=2, steps=9000), M(**{**A, "tf": 0.3}, seed=2, steps=9000),
        M(op="cube", **A, seed=2, ds=1, steps=9000),
    ]


def Dy(n_train=50, wd=1.0, seed=1, steps=2000, lr=1e-3):
    return dict(workload="dyck", lr=lr, weight_decay=wd, seed=seed, max_steps=steps,
                task={"n_train": n_train, "n_test": 2000})


def dyck():
    return [Dy(n_train=20, wd=1.0), Dy(n_train=20, wd=0.0, steps=1500)]


def grid5():
    return [
        M(**{**A, "L": 1}), M(**{**A, "L": 1}, seed=2),
        M(**{**A, "wd": 0.3}), M(**{**A, "wd": 3.0}), M(**{**A, "wd": 0.1}),
        M(**{**A, "lr": 3e-2}, steps=3000),
    ]


A1 = {**A, "L": 1}   # cheapest clean positive family found


def grid6():
    return [
        M(**A1, seed=3), M(**A1, seed=1, ds=1), M(op="sub", **A1), M(op="mul", **A1),
        M(op="sq_cross", **A1, steps=6000), M(**{**A1, "wd": 0.0}, steps=6000),
        M(**{**A1, "tf": 0.3}, steps=6000),
    ]
