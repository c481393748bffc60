package tally.bench.flink.fold;

import java.io.IOException;

import org.apache.flink.api.common.serialization.SerializerConfig;
import org.apache.flink.api.common.typeinfo.TypeInformation;
import org.apache.flink.api.common.typeutils.SimpleTypeSerializerSnapshot;
import org.apache.flink.api.common.typeutils.TypeSerializer;
import org.apache.flink.api.common.typeutils.TypeSerializerSnapshot;
import org.apache.flink.core.memory.DataInputView;
import org.apache.flink.core.memory.DataOutputView;

/**
 * A hand-written type for {@link Click} where clicks cross the network (the keyed dedup's
 * shuffle): four longs and the ad and campaign ids as length-prefixed bytes, read back through
 * an intern table ({@link Names}), so a click costs one object and no string on the receiving
 * side, and no reflection on either. Flink's POJO serializer instead writes a null flag per
 * field, strings as variable-length chars, and sets fields by reflection, with a new String per
 * id.
 */
public final class ClickType extends TypeInformation<Click> {
  private static final long serialVersionUID = 1L;

  public static final ClickType INFO = new ClickType();

  @Override
  public boolean isBasicType() {
    return false;
  }

  @Override
  public boolean isTupleType() {
    return false;
  }

  @Override
  public int getArity() {
    return 1;
  }

  @Override
  public int getTotalFields() {
    return 1;
  }

  @Override
  public Class<Click> getTypeClass() {
    return Click.class;
  }

  @Override
  public boolean isKeyType() {
    return false;
  }

  @Override
  public TypeSerializer<Click> createSerializer(SerializerConfig config) {
    return new ClickSerializer();
  }

  @Override
  public String toString() {
    return "ClickType";
  }

  @Override
  public boolean equals(Object o) {
    return o instanceof ClickType;
  }

  @Override
  public int hashCode() {
    return ClickType.class.hashCode();
  }

  @Override
  public boolean canEqual(Object o) {
    return o instanceof ClickType;
  }

  /** Stateful (its intern table and buffer): {@link #duplicate} gives each user its own. */
  public static final class ClickSerializer extends TypeSerializer<Click> {
    private static final long serialVersionUID = 1L;
    /** Length of an absent campaign. */
    private static final int NONE = 0xffff;

    private transient Names names;
    private transient byte[] scratch;

    @Override
    public boolean isImmutableType() {
      return false;
    }

    @Override
    public TypeSerializer<Click> duplicate() {
      return new ClickSerializer();
    }

    @Override
    public Click createInstance() {
      return new Click();
    }

    @Override
    public Click copy(Click from) {
      return copy(from, new Click());
    }

    @Override
    public Click copy(Click from, Click reuse) {
      reuse.ad = from.ad;
      reuse.campaign = from.campaign;
      reuse.ts = from.ts;
      reuse.user = from.user;
      reuse.idHi = from.idHi;
      reuse.idLo = from.idLo;
      return reuse;
    }

    @Override
    public int getLength() {
      return -1;
    }

    @Override
    public void serialize(Click click, DataOutputView out) throws IOException {
      out.writeLong(click.ts);
      out.writeLong(click.user);
      out.writeLong(click.idHi);
      out.writeLong(click.idLo);
      writeId(click.ad, out);
      if (click.campaign == null) {
        out.writeShort(NONE);
      } else {
        writeId(click.campaign, out);
      }
    }

    /** An id as its length (< 0xffff) and UTF-8 bytes; ids are mostly short ASCII. */
    private static void writeId(String id, DataOutputView out) throws IOException {
      int n = id.length();
      boolean ascii = n < NONE;
      for (int i = 0; i < n && ascii; i++) {
        ascii = id.charAt(i) < 0x80;
      }
      if (ascii) {
        out.writeShort(n);
        for (int i = 0; i < n; i++) {
          out.writeByte(id.charAt(i));
        }
      } else {
        byte[] bytes = id.getBytes(java.nio.charset.StandardCharsets.UTF_8);
        if (bytes.length >= NONE) {
          throw new IOException("an id of " + bytes.length + " bytes");
        }
        out.writeShort(bytes.length);
        out.write(bytes);
      }
    }

    private String readId(int n, DataInputView in) throws IOException {
      if (names == null) {
        names = new Names();
        scratch = new byte[64];
      }
      if (scratch.length < n) {
        scratch = new byte[Math.max(n, 2 * scratch.length)];
      }
      in.readFully(scratch, 0, n);
      return names.intern(scratch, 0, n);
    }

    @Override
    public Click deserialize(DataInputView in) throws IOException {
      return deserialize(new Click(), in);
    }

    @Override
    public Click deserialize(Click click, DataInputView in) throws IOException {
      click.ts = in.readLong();
      click.user = in.readLong();
      click.idHi = in.readLong();
      click.idLo = in.readLong();
      click.ad = readId(in.readUnsignedShort(), in);
      int campaign = in.readUnsignedShort();
      click.campaign = campaign == NONE ? null : readId(campaign, in);
      return click;
    }

    @Override
    public void copy(DataInputView in, DataOutputView out) throws IOException {
      serialize(deserialize(in), out);
    }

    @Override
    public boolean equals(Object o) {
      return o instanceof ClickSerializer;
    }

    @Override
    public int hashCode() {
      return ClickSerializer.class.hashCode();
    }

    @Override
    public TypeSerializerSnapshot<Click> snapshotConfiguration() {
      return new Snapshot();
    }
  }

  /** The serializer has no configuration: its snapshot only restores a new one. */
  public static final class Snapshot extends SimpleTypeSerializerSnapshot<Click> {
    public Snapshot() {
      super(ClickSerializer::new);
    }
  }
}
