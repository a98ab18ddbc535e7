"""Record: a small frozen, typed record for data that crosses from one step or process to
the next (the container plan, the registration). Its fields are the class's annotations,
defaults are class attributes; everything is set once, by the constructor. (dataclasses
would do, but importing it costs more than the rest of a container start's Python.)

Runs in: the host side, the supervisor, the slim supervisor and PID 1 (reading).
"""


class Record:
    def __init__(self, *args, **kwargs):
        fields = self.fields()
        if len(args) > len(fields):
            raise TypeError(f"{type(self).__name__}: too many arguments")
        values = dict(zip(fields, args))
        for name, value in kwargs.items():
            if name not in fields or name in values:
                raise TypeError(f"{type(self).__name__}: bad or repeated field {name}")
            values[name] = value
        for name in fields:
            if name not in values:
                if not hasattr(type(self), name):
                    raise TypeError(f"{type(self).__name__}: {name} is missing")
                values[name] = getattr(type(self), name)
            object.__setattr__(self, name, values[name])

    @classmethod
    def fields(cls) -> tuple:
        names = []
        for klass in reversed(cls.__mro__):
            names += [n for n in vars(klass).get("__annotations__", {}) if n not in names]
        return tuple(names)

    def __setattr__(self, name, value):
        raise AttributeError(f"{type(self).__name__} is frozen: cannot set {name}")

    def __delattr__(self, name):
        raise AttributeError(f"{type(self).__name__} is frozen: cannot delete {name}")

    def __repr__(self) -> str:
        body = ", ".join(f"{n}={getattr(self, n)!r}" for n in self.fields())
        return f"{type(self).__name__}({body})"
